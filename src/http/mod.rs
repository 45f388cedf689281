//! The HTTP surface: the only module that knows axum, headers and status
//! codes. Handlers extract, call one function, and map the result.

mod alerts;
mod analytics;
mod audit;
mod auth;
mod budgets;
pub mod dashboard;
mod error;
mod gateway;
mod health;
mod providers;
mod reports;
pub mod server;
mod tenants;
mod usage;
mod webhooks;

use std::sync::Arc;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::middleware;
use axum::routing::{MethodRouter, get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

pub use audit::{AuditTarget, FailedLogins};
pub use error::ApiError;
pub use tenants::user_document;

use crate::auth::Authenticator;
use crate::budget::enforcer::Budgets;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::recorder::Recorder;
use crate::store::Store;
use crate::tenancy::Access;

/// What every handler can reach: a handle, cloned per request by axum, so
/// one reference count rather than a copy of every service.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
#[derive(Debug)]
pub struct Services {
    pub store: Store,
    pub recorder: Recorder,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    pub gateway: Gateway,
    pub authenticator: Arc<Authenticator>,
    pub budgets: Budgets,
    /// Which addresses' failed logins the audit log has recorded lately.
    pub failed_logins: audit::FailedLogins,
    /// Signs and checks the dashboard's session cookies.
    pub sessions: crate::session::Sessions,
    /// Gateway exchanges, which outlive a client that hangs up; shutdown
    /// waits for them.
    pub tasks: TaskTracker,
}

/// The address a request came from, whatever the listener (plain TCP or
/// TLS): the audit log's client address. `http::server` gives it to every
/// request as `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::SocketAddr);

/// A route's declared rule: who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub method: Method,
    /// The path under `/api/v1`, with `{parameters}`.
    pub path: &'static str,
    pub access: Access,
    /// The audit log's name for what the route changes; `None` for routes
    /// that change nothing (and ingest, whose records are the ledger).
    pub audit: Option<&'static str>,
}

/// Every REST API route with the least role it needs. The router is built
/// from this table alone, so no route exists without a rule; handlers then
/// scope what they read and change to the caller.
fn api_routes() -> Vec<(RouteRule, MethodRouter<AppState>)> {
    use Access::{Admin, Member, OrgAdmin};
    use axum::routing::{delete, patch, put};
    let rule = |method: Method, path: &'static str, access: Access, handler| {
        (
            RouteRule {
                method,
                path,
                access,
                audit: None,
            },
            handler,
        )
    };
    let audited = |action: &'static str, (rule, handler): (RouteRule, MethodRouter<AppState>)| {
        (
            RouteRule {
                audit: Some(action),
                ..rule
            },
            handler,
        )
    };
    vec![
        rule(Method::POST, "/usage", OrgAdmin, post(usage::ingest)),
        rule(Method::GET, "/usage/records", Member, get(usage::records)),
        audited(
            "usage.export",
            rule(Method::GET, "/usage/export", Member, get(usage::export)),
        ),
        rule(Method::GET, "/usage/stats", Member, get(analytics::stats)),
        rule(Method::GET, "/usage/daily", Member, get(analytics::daily)),
        rule(Method::GET, "/usage/hourly", Member, get(analytics::hourly)),
        // The per-model rollup has no user dimension: org-wide figures.
        rule(
            Method::GET,
            "/models/performance",
            OrgAdmin,
            get(analytics::performance),
        ),
        rule(
            Method::GET,
            "/projections",
            Member,
            get(analytics::projections),
        ),
        rule(Method::GET, "/budgets", Member, get(budgets::list)),
        audited(
            "budget.create",
            rule(Method::POST, "/budgets", OrgAdmin, post(budgets::create)),
        ),
        rule(Method::GET, "/budgets/{id}", Member, get(budgets::read)),
        audited(
            "budget.update",
            rule(Method::PUT, "/budgets/{id}", OrgAdmin, put(budgets::update)),
        ),
        audited(
            "budget.delete",
            rule(
                Method::DELETE,
                "/budgets/{id}",
                OrgAdmin,
                delete(budgets::delete),
            ),
        ),
        rule(
            Method::GET,
            "/budgets/{id}/status",
            Member,
            get(budgets::status),
        ),
        rule(Method::GET, "/alerts", Member, get(alerts::list)),
        audited(
            "alert.create",
            rule(Method::POST, "/alerts", OrgAdmin, post(alerts::create)),
        ),
        audited(
            "alert.acknowledge",
            rule(
                Method::POST,
                "/alerts/{id}/acknowledge",
                OrgAdmin,
                post(alerts::acknowledge),
            ),
        ),
        audited(
            "alert.resolve",
            rule(
                Method::POST,
                "/alerts/{id}/resolve",
                OrgAdmin,
                post(alerts::resolve),
            ),
        ),
        rule(Method::GET, "/webhooks", Admin, get(webhooks::list)),
        audited(
            "webhook.create",
            rule(Method::POST, "/webhooks", Admin, post(webhooks::create)),
        ),
        audited(
            "webhook.delete",
            rule(
                Method::DELETE,
                "/webhooks/{id}",
                Admin,
                delete(webhooks::delete),
            ),
        ),
        rule(
            Method::GET,
            "/webhooks/{id}/deliveries",
            Admin,
            get(webhooks::deliveries),
        ),
        rule(Method::GET, "/providers", Admin, get(providers::list)),
        audited(
            "provider.update",
            rule(
                Method::PUT,
                "/providers/{provider}",
                Admin,
                put(providers::update),
            ),
        ),
        audited(
            "provider.refresh",
            rule(
                Method::POST,
                "/providers/{provider}/refresh",
                Admin,
                post(providers::refresh),
            ),
        ),
        rule(Method::GET, "/reports", Admin, get(reports::list)),
        audited(
            "report.create",
            rule(Method::POST, "/reports", Admin, post(reports::create)),
        ),
        audited(
            "report.delete",
            rule(
                Method::DELETE,
                "/reports/{id}",
                Admin,
                delete(reports::delete),
            ),
        ),
        rule(Method::GET, "/orgs", Member, get(tenants::list_orgs)),
        audited(
            "org.create",
            rule(Method::POST, "/orgs", Admin, post(tenants::create_org)),
        ),
        rule(Method::GET, "/users", Member, get(tenants::list_users)),
        audited(
            "user.create",
            rule(Method::POST, "/users", OrgAdmin, post(tenants::create_user)),
        ),
        rule(Method::GET, "/users/{id}", Member, get(tenants::read_user)),
        audited(
            "user.update",
            rule(
                Method::PATCH,
                "/users/{id}",
                OrgAdmin,
                patch(tenants::update_user),
            ),
        ),
        rule(Method::GET, "/keys", Member, get(tenants::list_keys)),
        audited(
            "user.export",
            rule(
                Method::GET,
                "/users/{id}/export",
                Member,
                get(tenants::export_user),
            ),
        ),
        audited(
            "user.delete",
            rule(
                Method::DELETE,
                "/users/{id}",
                OrgAdmin,
                delete(tenants::delete_user),
            ),
        ),
        audited(
            "key.create",
            rule(Method::POST, "/keys", Member, post(tenants::create_key)),
        ),
        audited(
            "key.revoke",
            rule(
                Method::DELETE,
                "/keys/{id}",
                Member,
                delete(tenants::revoke_key),
            ),
        ),
        rule(Method::GET, "/audit", OrgAdmin, get(audit::list)),
    ]
}

/// The REST API's rules, for tests and documentation.
pub fn api_rules() -> Vec<RouteRule> {
    api_routes().into_iter().map(|(rule, _)| rule).collect()
}

/// Builds the router. Layers run outside-in in the order written: each
/// group has its own body limit (413 before a larger body is read whole),
/// then its authentication, then the handler.
pub fn router(state: AppState) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (rule, handler) in api_routes() {
        let path = rule.path;
        let guarded = handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), rule),
            auth::authorize,
        ));
        let merged = match by_path.remove(path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        by_path.insert(path, merged);
    }
    let api = by_path
        .into_iter()
        .fold(Router::new(), |api, (path, handler)| {
            api.route(path, handler)
        })
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes));
    let openai = Router::new()
        .route("/chat/completions", post(gateway::chat_completions))
        .route("/completions", post(gateway::completions))
        .route("/embeddings", post(gateway::embeddings))
        .route("/images/generations", post(gateway::image_generations))
        .route("/responses", post(gateway::responses))
        .route("/models", get(gateway::models))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            gateway::require_key,
        ))
        .layer(DefaultBodyLimit::max(state.config.gateway.max_body_bytes));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .nest("/api/v1", api)
        .nest("/v1", openai)
        .merge(dashboard::routes())
        .fallback(health::not_found)
        .with_state(state)
}
