//! Who may call the REST API: the bootstrap admin token
//! (`TOLLGATE_ADMIN_TOKEN`) or a Tollgate key, whose role and organization
//! decide what it may do. Every route declares the least role it needs
//! (`http::api_routes`); this middleware checks it and hands the handler a
//! [`Caller`], whose scope every query then runs in.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::keys::looks_like_key;
use crate::store::RecordFilter;
use crate::tenancy::{Access, Caller};

/// The bearer token of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Authenticates the caller, checks the route's rule, and hands the
/// handler a [`Caller`] (as a request extension).
pub async fn authorize(
    State((state, access)): State<(AppState, Access)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate(&state, request.headers()).await?;
    caller.may(access)?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let presented = bearer(headers).ok_or(ApiError::Unauthorized(
        "missing API key: send `Authorization: Bearer <token>`",
    ))?;
    if looks_like_key(presented) {
        let key = state.authenticator.gateway_key(Some(presented)).await?;
        return Ok(Caller::from_key(&key));
    }
    match &state.config.server.admin_token {
        // Comparing digests keeps the comparison's timing independent of
        // how much of the token an attacker has guessed.
        Some(expected)
            if Sha256::digest(presented.as_bytes())
                == Sha256::digest(expected.expose().as_bytes()) =>
        {
            Ok(Caller::bootstrap_admin())
        }
        _ => Err(ApiError::Unauthorized("invalid API key")),
    }
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
