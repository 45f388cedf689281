//! Who may call the REST API: for now, holders of the bootstrap admin token
//! (`TOLLGATE_ADMIN_TOKEN`). With no token configured the API refuses every
//! call, so a fresh install is never open.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.config.server.admin_token else {
        return Err(ApiError::Unauthorized(
            "the API is disabled: no admin token is configured (set TOLLGATE_ADMIN_TOKEN)",
        ));
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized(
            "missing API key: send `Authorization: Bearer <token>`",
        ))?;
    // Comparing digests keeps the comparison's timing independent of how
    // much of the token an attacker has guessed.
    if Sha256::digest(presented.as_bytes()) != Sha256::digest(expected.expose().as_bytes()) {
        return Err(ApiError::Unauthorized("invalid API key"));
    }
    Ok(next.run(request).await)
}
