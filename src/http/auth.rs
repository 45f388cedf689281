//! Who may call the REST API: the bootstrap admin token
//! (`TOLLGATE_ADMIN_TOKEN`) or a Tollgate key, whose role and organization
//! decide what it may do. Every route declares the least role it needs
//! (`http::api_routes`); this middleware checks it and hands the handler a
//! [`Caller`], whose scope every query then runs in.

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::audit::{self, AuditTarget};
use super::{ApiError, AppState, RouteRule};
use crate::keys::looks_like_key;
use crate::session::{self, Session, Subject};
use crate::store::RecordFilter;
use crate::tenancy::Caller;

/// The header a change made through a dashboard session carries.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Authenticates the caller, checks the route's rule, hands the handler a
/// [`Caller`] (as a request extension), and writes the audit entry of a
/// route that changes something (and of a failed login) once it answered.
pub async fn authorize(
    State((state, rule)): State<(AppState, RouteRule)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<super::ClientAddress>>()
        .map(|info| info.0.0.ip());
    let caller = match authenticate(&state, request.method(), request.headers()).await {
        Ok(caller) => caller,
        Err(error) => {
            if matches!(error, ApiError::Unauthorized(_)) {
                audit::failed_login(&state, client).await;
            }
            return Err(error);
        }
    };
    if let Err(denied) = caller.may(rule.access) {
        if let Some(action) = rule.audit {
            let call = audit::Call {
                caller: Some(&caller),
                action,
                target: None,
                status: 403,
                client,
            };
            audit::record(&state, call).await;
        }
        return Err(denied.into());
    }
    // The path's own id (`/budgets/{id}`), when it has one.
    let (mut parts, body) = request.into_parts();
    let path_target = match rule.audit {
        Some(_) => RawPathParams::from_request_parts(&mut parts, &state)
            .await
            .ok()
            .and_then(|params| params.iter().next().map(|(_, value)| value.to_owned())),
        None => None,
    };
    parts.extensions.insert(caller.clone());
    let request = Request::from_parts(parts, body);
    let response = next.run(request).await;
    if let Some(action) = rule.audit {
        let target = response
            .extensions()
            .get::<AuditTarget>()
            .cloned()
            .or_else(|| path_target.map(|id| AuditTarget { id, org_id: None }));
        let call = audit::Call {
            caller: Some(&caller),
            action,
            target,
            status: response.status().as_u16(),
            client,
        };
        audit::record(&state, call).await;
    }
    Ok(response)
}

/// Who is calling: a bearer token (key or admin token) or, failing that, a
/// dashboard session cookie. A change made through a session must carry
/// the session's CSRF token in `X-CSRF-Token`.
async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    if let Some(presented) = bearer(headers) {
        return authenticate_token(state, presented).await;
    }
    let Some(token) = session_cookie(headers) else {
        return Err(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <token>`",
        ));
    };
    let session = state
        .sessions
        .open(token, state.config.server.admin_token.as_ref(), Utc::now())
        .map_err(|_| ApiError::Unauthorized("the dashboard session is not valid; log in again"))?;
    if !method.is_safe() {
        if !same_origin(headers) {
            return Err(ApiError::Forbidden(
                "a change through a dashboard session must come from the dashboard's own pages"
                    .to_owned(),
            ));
        }
        check_csrf(state, &session, headers)?;
    }
    session_caller(state, &session).await
}

/// Refuses a change through `session` that does not carry its CSRF token.
pub fn check_csrf(
    state: &AppState,
    session: &Session,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if state.sessions.check_csrf(session, presented) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "missing or invalid CSRF token: send the session's `X-CSRF-Token`".to_owned(),
        ))
    }
}

/// The caller a bearer token names.
pub async fn authenticate_token(state: &AppState, presented: &str) -> Result<Caller, ApiError> {
    if looks_like_key(presented) {
        let key = state.authenticator.gateway_key(Some(presented)).await?;
        return Ok(Caller::from_key(&key));
    }
    match &state.config.server.admin_token {
        Some(expected) if same_secret(presented, expected.expose()) => {
            Ok(Caller::bootstrap_admin())
        }
        _ => Err(ApiError::Unauthorized("invalid API key")),
    }
}

/// The caller behind an open session, checked anew: a revoked key or a
/// demoted user ends or narrows the session at once.
pub async fn session_caller(state: &AppState, session: &Session) -> Result<Caller, ApiError> {
    match &session.subject {
        Subject::Key(hash) => {
            let key = state.authenticator.key_with_hash(hash.clone()).await?;
            Ok(Caller::from_key(&key))
        }
        Subject::AdminToken => Ok(Caller::bootstrap_admin()),
    }
}

/// The session cookie's value, if the request carries one. Two or more
/// (another site on the same domain can plant a second one for a narrower
/// path) give an empty value, which is no valid session.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == session::COOKIE)
        .map(|(_, value)| value.trim());
    let first = values.next()?;
    match values.next() {
        None => Some(first),
        Some(_) => Some(""),
    }
}

/// Whether a browser says the request comes from a page of this server:
/// `Sec-Fetch-Site` is `same-origin` (or `none`: typed by the user), or,
/// without it, `Origin` names this host. Requests that carry neither (not
/// from a browser) pass; the CSRF token still applies to them.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Compares two secrets in time that depends on neither: their digests
/// (fixed length, whatever was sent) are compared byte by byte without an
/// early exit.
fn same_secret(presented: &str, expected: &str) -> bool {
    let (left, right) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    left.iter()
        .zip(right.iter())
        .fold(0_u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Confines a usage filter to the caller: their scope is added, and a
/// filter naming another tenant is refused.
pub fn scoped(caller: &Caller, filter: RecordFilter) -> Result<RecordFilter, ApiError> {
    caller.check_filter(filter.org_id.as_deref(), filter.user_id.as_deref())?;
    Ok(RecordFilter {
        scope: caller.scope(),
        ..filter
    })
}
