//! `/api/v1/orgs`, `/api/v1/users`, `/api/v1/keys`: organizations, users
//! and keys, each caller inside their own scope. Unknown fields — including
//! ones a caller may not set, like a user's `org_id` on update — are
//! refused, never ignored.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::Response;
use axum::{Extension, Json};
use chrono::{SubsecRound, Utc};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::budgets::BudgetView;
use super::error::{only_params, parse_json};
use super::{ApiError, AppState, AuditTarget};
use crate::audit::AuditFilter;
use crate::export::{self, ExportError, Format};
use crate::keys::{self, ApiKey, Role};
use crate::store::{KeyRecord, RecordFilter, Scope, Store, StoreError};
use crate::tenancy::{Caller, Org, User, check_name};

/// The `?org_id=` of a listing: the only parameter, and the caller's own
/// organization unless they are an administrator.
fn org_filter<'a>(
    caller: &Caller,
    parameters: &'a HashMap<String, String>,
) -> Result<Option<&'a str>, ApiError> {
    only_params(parameters, &["org_id"])?;
    let org_id = parameters.get("org_id").map(String::as_str);
    caller.check_filter(org_id, None)?;
    Ok(org_id)
}

fn name(field: &'static str, value: &str) -> Result<(), ApiError> {
    check_name(field, value).map_err(|(field, message)| ApiError::invalid(field, message))
}

#[derive(Serialize)]
struct OrgView<'a> {
    object: &'static str,
    #[serde(flatten)]
    org: &'a Org,
}

pub async fn list_orgs(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let orgs = state.store.orgs(&caller.scope()).await?;
    let data: Vec<OrgView> = orgs
        .iter()
        .map(|org| OrgView {
            object: "organization",
            org,
        })
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

pub async fn create_org(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Value>), ApiError> {
    let input: NewOrg = parse_json(&body)?;
    name("id", &input.id)?;
    if let Some(given) = &input.name {
        name("name", given)?;
    }
    let org = Org {
        name: input.name.unwrap_or_else(|| input.id.clone()),
        id: input.id,
        created_at: Utc::now().trunc_subsecs(6),
    };
    state.store.insert_org(&caller.scope(), &org).await?;
    let target = AuditTarget {
        id: org.id.clone(),
        org_id: Some(org.id.clone()),
    };
    Ok((
        StatusCode::CREATED,
        target,
        Json(json!(OrgView {
            object: "organization",
            org: &org,
        })),
    ))
}

#[derive(Serialize)]
struct UserView<'a> {
    object: &'static str,
    #[serde(flatten)]
    user: &'a User,
}

fn user_json(user: &User) -> Value {
    json!(UserView {
        object: "user",
        user,
    })
}

pub async fn list_users(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let org_id = org_filter(&caller, &parameters)?;
    let users = state.store.users(&caller.scope(), org_id).await?;
    let data: Vec<Value> = users.iter().map(user_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    id: String,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<Role>,
}

pub async fn create_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Value>), ApiError> {
    let input: NewUser = parse_json(&body)?;
    name("id", &input.id)?;
    for (field, value) in [("email", &input.email), ("name", &input.name)] {
        if let Some(value) = value {
            name(field, value)?;
        }
    }
    let org_id = input.org_id.unwrap_or_else(|| caller.org_id.clone());
    let role = input.role.unwrap_or(Role::Member);
    caller.check_new_user(&org_id, role)?;
    if !state.store.org_exists(&org_id).await? {
        return Err(ApiError::invalid(
            "org_id",
            format!("no organization `{org_id}`"),
        ));
    }
    let user = User {
        id: input.id,
        org_id,
        email: input.email,
        name: input.name,
        role,
        created_at: Utc::now().trunc_subsecs(6),
    };
    state.store.insert_user(&caller.scope(), &user).await?;
    let target = AuditTarget {
        id: user.id.clone(),
        org_id: Some(user.org_id.clone()),
    };
    Ok((StatusCode::CREATED, target, Json(user_json(&user))))
}

async fn find_user(state: &AppState, caller: &Caller, id: &str) -> Result<User, ApiError> {
    state
        .store
        .user(&caller.scope(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user `{id}`")))
}

pub async fn read_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = find_user(&state, &caller, &id).await?;
    Ok(Json(user_json(&user)))
}

/// What `PATCH /users/{id}` may change. `id` and `org_id` are named so
/// that sending them is refused with a clear message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    email: Option<Option<String>>,
    #[serde(default)]
    name: Option<Option<String>>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    org_id: Option<Value>,
}

pub async fn update_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(AuditTarget, Json<Value>), ApiError> {
    let change: UserChange = parse_json(&body)?;
    if change.id.is_some() {
        return Err(ApiError::invalid("id", "a user's id cannot be changed"));
    }
    if change.org_id.is_some() {
        return Err(ApiError::invalid(
            "org_id",
            "a user's organization cannot be changed",
        ));
    }
    let mut user = find_user(&state, &caller, &id).await?;
    caller.check_acts_on(user.role)?;
    if let Some(role) = change.role
        && role != user.role
    {
        caller.check_role_change(&user, role)?;
        user.role = role;
    }
    for (field, value, slot) in [
        ("email", change.email, &mut user.email),
        ("name", change.name, &mut user.name),
    ] {
        if let Some(value) = value {
            if let Some(text) = &value {
                name(field, text)?;
            }
            *slot = value;
        }
    }
    if !state.store.update_user(&caller.scope(), &user).await? {
        return Err(ApiError::NotFound(format!("no user `{id}`")));
    }
    // Their keys' roles follow the user's.
    state.authenticator.forget_all();
    let target = AuditTarget {
        id: user.id.clone(),
        org_id: Some(user.org_id.clone()),
    };
    Ok((target, Json(user_json(&user))))
}

/// A key as the API lists it (never its secret or hash).
fn key_json(key: &ApiKey) -> Value {
    json!({
        "object": "api_key",
        "id": key.id,
        "org_id": key.org_id,
        "user_id": key.user_id,
        "name": key.name,
        "role": key.role,
        "key_prefix": key.key_prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
    })
}

pub async fn list_keys(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let org_id = org_filter(&caller, &parameters)?;
    let keys = state.store.list_keys(&caller.scope(), org_id).await?;
    let data: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(default)]
    name: Option<String>,
}

/// Makes a key inside the caller's scope; its secret is in this answer and
/// nowhere else, ever.
pub async fn create_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, AuditTarget, Json<Value>), ApiError> {
    let input: NewKey = if body.is_empty() {
        parse_json(b"{}")?
    } else {
        parse_json(&body)?
    };
    if let Some(given) = &input.name {
        name("name", given)?;
    }
    let org_id = input.org_id.unwrap_or_else(|| caller.org_id.clone());
    // A member's keys are their own unless they say otherwise (and they
    // may not).
    let user_id = match (input.user_id, caller.role) {
        (Some(user), _) => Some(user),
        (None, Role::Member) => caller.user_id.clone(),
        (None, _) => None,
    };
    let role = input.role.unwrap_or(Role::Member);
    caller.check_new_key(&org_id, user_id.as_deref(), role)?;
    if !state.store.org_exists(&org_id).await? {
        return Err(ApiError::invalid(
            "org_id",
            format!("no organization `{org_id}`"),
        ));
    }
    if let Some(user_id) = &user_id {
        let Some(user) = state.store.user(&caller.scope(), user_id).await? else {
            return Err(ApiError::invalid(
                "user_id",
                format!("no user `{user_id}` in `{org_id}`"),
            ));
        };
        if user.org_id != org_id {
            return Err(ApiError::invalid(
                "user_id",
                format!("no user `{user_id}` in `{org_id}`"),
            ));
        }
        // Keys for someone else only for roles below the caller's: an org
        // admin cannot mint keys that act as a peer.
        if !caller.is_admin()
            && caller.user_id.as_deref() != Some(user.id.as_str())
            && (user.role == caller.role || !caller.role.includes(user.role))
        {
            return Err(ApiError::Forbidden(format!(
                "keys for `{user_id}` ({}) can only be made by a higher role",
                user.role
            )));
        }
        if !user.role.includes(role) {
            return Err(ApiError::Forbidden(format!(
                "user `{user_id}` has the {} role; their keys cannot be {role}",
                user.role
            )));
        }
    }
    let new_key = keys::generate().map_err(|error| {
        tracing::error!(%error, "cannot make a key");
        ApiError::Internal
    })?;
    let key = ApiKey {
        id: Uuid::now_v7(),
        org_id,
        user_id,
        name: input.name,
        role,
        key_prefix: new_key.key_prefix.clone(),
        created_at: Utc::now().trunc_subsecs(6),
        last_used_at: None,
        revoked_at: None,
    };
    state
        .store
        .insert_key(
            &caller.scope(),
            KeyRecord {
                key: &key,
                hash: &new_key.hash,
            },
        )
        .await?;
    let mut body = key_json(&key);
    body["key"] = Value::String(new_key.secret.expose().to_owned());
    let target = AuditTarget {
        id: key.id.to_string(),
        org_id: Some(key.org_id.clone()),
    };
    Ok((StatusCode::CREATED, target, Json(body)))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no active key `{id}`"));
    let key_id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let key = state
        .store
        .key(&caller.scope(), key_id)
        .await?
        .ok_or_else(not_found)?;
    caller.check_acts_on(key.role)?;
    if !state.store.revoke_key(&caller.scope(), key_id).await? {
        return Err(not_found());
    }
    state.authenticator.forget_all();
    Ok(Json(
        json!({ "id": key_id, "object": "api_key.revoked", "revoked": true }),
    ))
}

/// `GET /api/v1/users/{id}/export`: everything stored about a user, as one
/// JSON document (see [`user_document`]).
pub async fn export_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(AuditTarget, Response), ApiError> {
    let user = find_user(&state, &caller, &id).await?;
    let body = user_document(&state.store, &caller.scope(), &user)
        .await?
        .map(|chunk| {
            chunk
                .map(Bytes::from)
                .inspect_err(|error| tracing::error!(%error, "user export stopped"))
        });
    let target = AuditTarget {
        id: user.id.clone(),
        org_id: Some(user.org_id.clone()),
    };
    let response = Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .header(
            CONTENT_DISPOSITION,
            "attachment; filename=\"tollgate-user-export.json\"",
        )
        .body(Body::from_stream(body))
        .map_err(|error| {
            tracing::error!(%error, "cannot build the export response");
            ApiError::Internal
        })?;
    Ok((target, response))
}

/// Everything stored about a user, as one JSON document streamed in
/// pieces: the user, their keys (never secrets), the budgets on them, the
/// audit entries naming them, and every usage record, page by page. The
/// API's user export and `tollgate users export` write the same document.
pub async fn user_document(
    store: &Store,
    scope: &Scope,
    user: &User,
) -> Result<impl Stream<Item = Result<Vec<u8>, ExportError>> + Send + 'static, StoreError> {
    let keys: Vec<Value> = store
        .list_keys(scope, Some(&user.org_id))
        .await?
        .iter()
        .filter(|key| key.user_id.as_deref() == Some(user.id.as_str()))
        .map(key_json)
        .collect();
    let budgets: Vec<BudgetView> = store
        .budgets(scope, Some(&user.org_id))
        .await?
        .iter()
        .filter(|budget| budget.scope.user_id.as_deref() == Some(user.id.as_str()))
        .map(BudgetView::from)
        .collect();
    // The entries about them (`user.*` in their organization); a member
    // exporting themselves does not see who acted or from where.
    let mut audit_entries = store
        .audit_entries(&AuditFilter {
            target: Some(user.id.clone()),
            limit: 10_000,
            scope: Scope::Org {
                org_id: user.org_id.clone(),
            },
            ..AuditFilter::default()
        })
        .await?;
    audit_entries.retain(|entry| entry.action.starts_with("user."));
    if matches!(scope, Scope::User { .. }) {
        for entry in &mut audit_entries {
            entry.client_addr = None;
            entry.actor = "redacted".to_owned();
        }
    }
    let head = json!({
        "object": "user.export",
        "exported_at": Utc::now().trunc_subsecs(6),
        "user": UserView { object: "user", user },
        "keys": keys,
        "budgets": budgets,
        "audit_entries": audit_entries,
    })
    .to_string();
    // The head without its closing brace, then the records as an array.
    let mut opening = head
        .strip_suffix('}')
        .unwrap_or(&head)
        .to_owned()
        .into_bytes();
    opening.extend_from_slice(b",\"usage_records\":[");
    let filter = RecordFilter {
        org_id: Some(user.org_id.clone()),
        user_id: Some(user.id.clone()),
        scope: scope.clone(),
        ..RecordFilter::default()
    };
    let mut first = true;
    let records = export::chunks(store.clone(), filter, Format::Json).map(move |chunk| {
        let chunk = chunk?;
        // NDJSON lines become array elements: JSON text never holds a raw
        // newline, so every newline is a record boundary.
        let lines = chunk.bytes.strip_suffix(b"\n").unwrap_or(&chunk.bytes);
        let mut bytes = Vec::with_capacity(lines.len() + 1);
        if !lines.is_empty() {
            if !first {
                bytes.push(b',');
            }
            first = false;
            bytes.extend(
                lines
                    .iter()
                    .map(|&byte| if byte == b'\n' { b',' } else { byte }),
            );
        }
        Ok(bytes)
    });
    Ok(futures_util::stream::once(async move { Ok(opening) })
        .chain(records)
        .chain(futures_util::stream::once(async { Ok(b"]}".to_vec()) })))
}

/// `DELETE /api/v1/users/{id}`: erases the user (see `Store::erase_user`);
/// the audit entry names the pseudonym, not the person.
pub async fn delete_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(AuditTarget, Json<Value>), ApiError> {
    let user = find_user(&state, &caller, &id).await?;
    caller.check_acts_on(user.role)?;
    let Some(erasure) = state.store.erase_user(&caller.scope(), &id).await? else {
        return Err(ApiError::NotFound(format!("no user `{id}`")));
    };
    // Their keys must stop working now, not when the cache expires.
    state.authenticator.forget_all();
    let target = AuditTarget {
        id: erasure.pseudonym.clone(),
        org_id: None,
    };
    Ok((
        target,
        Json(json!({
            "object": "user.deleted",
            "deleted": true,
            "pseudonym": erasure.pseudonym,
            "usage_records": erasure.usage_records,
            "keys": erasure.keys,
            "budgets": erasure.budgets,
            "audit_entries": erasure.audit_entries,
        })),
    ))
}
