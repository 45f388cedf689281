//! The dashboard at `/admin/ai-usage`: its page and files, built into the
//! binary, and the login that turns a key into a session cookie. The page
//! reads and changes everything through the REST API with that cookie, so
//! what it shows is scoped exactly as the caller's key would be.

use std::path::Path;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::audit::{self, AuditTarget};
use super::auth;
use super::error::parse_json;
use super::{ApiError, AppState, ClientAddress};
use crate::keys::{KeyHash, looks_like_key};
use crate::session::{self, Session, Subject};
use crate::tenancy::Caller;

/// Where the dashboard lives.
pub const PATH: &str = "/admin/ai-usage";

/// Every response from here is read only by this page: no framing, no
/// sniffing, no inline script, and requests only to this server.
const CONTENT_SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// A file of the dashboard, as built into the binary.
struct Asset {
    /// Its name under `/admin/ai-usage/assets/` (the page itself has none).
    name: &'static str,
    /// Its path under the `dashboard/` folder.
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const PAGE: Asset = Asset {
    name: "",
    path: "index.html",
    content_type: "text/html; charset=utf-8",
    bytes: include_bytes!("../../dashboard/index.html"),
};

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        path: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../dashboard/app.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        path: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    },
];

/// The page and each file, with their sizes: what a first visit loads.
pub fn first_load() -> Vec<(&'static str, usize)> {
    std::iter::once(("index.html", PAGE.bytes.len()))
        .chain(ASSETS.iter().map(|asset| (asset.name, asset.bytes.len())))
        .collect()
}

/// The dashboard's routes (outside `/api/v1`: no route rule, no bearer
/// token; the session endpoints authenticate themselves).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(page))
        .route(&format!("{PATH}/"), get(page))
        .route(&format!("{PATH}/assets/{{name}}"), get(asset))
        .route(
            &format!("{PATH}/session"),
            get(current).post(login).delete(logout),
        )
        // A login body is one key.
        .layer(DefaultBodyLimit::max(4096))
}

async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    serve(&state, &PAGE, &headers).await
}

async fn asset(
    State(state): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(&state, asset, &headers).await,
        None => ApiError::NotFound(format!("no dashboard file `{name}`")).into_response(),
    }
}

/// Answers with a file: the built-in copy, or the one in the configured
/// folder. Browsers revalidate every time (`no-cache`) and get 304 while
/// the file is unchanged, so a new binary's files are picked up at once.
async fn serve(state: &AppState, asset: &Asset, request: &HeaderMap) -> Response {
    let bytes = match &state.config.dashboard.assets_dir {
        Some(folder) => match tokio::fs::read(Path::new(folder).join(asset.path)).await {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::warn!(%error, file = asset.path, "cannot read a dashboard file");
                return ApiError::NotFound(format!("dashboard file {} is missing", asset.path))
                    .into_response();
            }
        },
        None => Bytes::from_static(asset.bytes),
    };
    let digest = Sha256::digest(&bytes);
    let etag = format!("\"{}\"", crate::keys::hex(&digest[..12]));
    let mut headers = protective_headers();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let unchanged = request
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, bytes).into_response()
}

fn protective_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    key: String,
}

/// What the page knows of its session: who it is and the CSRF token to
/// send with changes.
#[derive(Serialize)]
struct SessionView {
    object: &'static str,
    role: &'static str,
    org_id: Option<String>,
    user_id: Option<String>,
    key_id: Option<String>,
    csrf_token: String,
    expires_at: DateTime<Utc>,
    /// The server's zone for days (date filters, daily buckets).
    timezone: &'static str,
}

impl SessionView {
    fn new(state: &AppState, caller: &Caller, session: &Session) -> Self {
        let bootstrap = caller.key_id.is_none();
        SessionView {
            object: "dashboard.session",
            role: caller.role.as_str(),
            org_id: (!bootstrap).then(|| caller.org_id.clone()),
            user_id: caller.user_id.clone(),
            key_id: caller.key_id.map(|id| id.to_string()),
            csrf_token: state.sessions.csrf_token(session),
            expires_at: session.expires_at,
            timezone: state.config.server.timezone.name(),
        }
    }
}

/// `POST /admin/ai-usage/session`: a key (or the admin token) in, a session
/// cookie out.
async fn login(
    State(state): State<AppState>,
    request: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let headers = &request.headers;
    let client = request
        .extensions
        .get::<ConnectInfo<ClientAddress>>()
        .map(|info| info.0.0.ip());
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|kind| kind.starts_with("application/json"));
    if !json {
        return Err(ApiError::BadRequest {
            param: None,
            message: "send the key as JSON: Content-Type: application/json".to_owned(),
        });
    }
    // A page of another site on the same domain must not log a visitor in
    // (to someone else's account).
    if !auth::same_origin(headers) {
        return Err(ApiError::Forbidden(
            "log in from the dashboard's own page".to_owned(),
        ));
    }
    let request: LoginRequest = parse_json(&body)?;
    let presented = request.key.trim();
    let caller = match auth::authenticate_token(&state, presented).await {
        Ok(caller) => caller,
        Err(error) => {
            if matches!(error, ApiError::Unauthorized(_)) {
                audit::failed_login(&state, client).await;
            }
            return Err(error);
        }
    };
    let subject = if looks_like_key(presented) {
        Subject::Key(KeyHash::of(presented))
    } else {
        Subject::AdminToken
    };
    let (token, session) = state
        .sessions
        .issue(
            subject,
            state.config.server.admin_token.as_ref(),
            Utc::now(),
        )
        .map_err(|error| {
            tracing::error!(%error, "cannot open a dashboard session");
            ApiError::Internal
        })?;
    let call = audit::Call {
        caller: Some(&caller),
        action: "session.login",
        target: caller.key_id.map(|id| AuditTarget {
            id: id.to_string(),
            org_id: None,
        }),
        status: 200,
        client,
    };
    audit::record(&state, call).await;
    let cookie = cookie_header(
        &token,
        state.sessions.lifetime().num_seconds(),
        secure(&state, headers),
    )?;
    let view = SessionView::new(&state, &caller, &session);
    let no_store = HeaderValue::from_static("no-store");
    Ok((
        [(SET_COOKIE, cookie), (CACHE_CONTROL, no_store)],
        axum::Json(view),
    )
        .into_response())
}

/// `GET /admin/ai-usage/session`: the current session, for a page that was
/// reloaded (its CSRF token lives only in memory).
async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = open(&state, &headers)?;
    let caller = auth::session_caller(&state, &session).await?;
    let view = SessionView::new(&state, &caller, &session);
    Ok(([(CACHE_CONTROL, "no-store")], axum::Json(view)).into_response())
}

/// `DELETE /admin/ai-usage/session`: log out. The cookie is cleared and this
/// instance refuses the token from now on. It needs no CSRF token and never
/// fails: being logged out by force harms nobody, while a logout that can
/// fail leaves a shared browser signed in.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Ok(session) = open(&state, &headers) {
        state.sessions.end(&session, Utc::now());
    }
    let cookie = cookie_header("", 0, secure(&state, &headers))?;
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie)]).into_response())
}

fn open(state: &AppState, headers: &HeaderMap) -> Result<Session, ApiError> {
    let token = auth::session_cookie(headers).ok_or(ApiError::Unauthorized("not logged in"))?;
    state
        .sessions
        .open(token, state.config.server.admin_token.as_ref(), Utc::now())
        .map_err(|error| match error {
            session::SessionError::Expired => {
                ApiError::Unauthorized("the session has expired; log in again")
            }
            session::SessionError::Invalid => {
                ApiError::Unauthorized("the session is not valid; log in again")
            }
        })
}

/// Whether the cookie should be `Secure`: the server speaks HTTPS, or a
/// proxy in front of it says the browser did.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.server.tls_cert.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// The session cookie: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's page sends it), for the whole server (the page calls
/// `/api/v1` with it).
fn cookie_header(token: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        session::COOKIE
    ))
    .map_err(|_| ApiError::Internal)
}
