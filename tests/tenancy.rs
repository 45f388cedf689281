//! Tenancy: every REST route × every role × another tenant's ids. Each
//! route's declared rule is enforced, nothing of another tenant leaks into
//! an answer, and nothing of theirs can be changed. A route added without a
//! case here fails `request_for`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use reqwest::Method;
use serde_json::{Value, json};
use tollgate::http::{RouteRule, api_rules};
use tollgate::tenancy::Access;

use common::{ADMIN_TOKEN, TestApp, TestDatabase, spawn_app, test_config};

both_backends_with_database!(
    every_route_enforces_its_rule_and_the_callers_tenant,
    fields_a_caller_may_not_set_are_refused,
    every_change_is_audited_once_without_secrets,
    a_users_export_holds_everything_and_erasure_leaves_no_trace,
    erasure_stays_in_its_organization,
);

/// Who calls, and what they must never see in a successful answer.
struct Caller {
    name: &'static str,
    token: String,
    /// The least role this caller holds.
    level: Access,
    /// Strings that belong to tenants (or users) this caller may not see.
    forbidden: Vec<String>,
}

/// What the test set up, by tenant.
struct World {
    budget_a: String,
    budget_a2: String,
    budget_b: String,
    alert_a: String,
    alert_b: String,
    alert_global: String,
    key_b: String,
    key_a2: String,
}

async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let (status, json, text) = call(app, ADMIN_TOKEN, method, path, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {text}");
    json
}

fn usage(org: &str, user: &str) -> Value {
    json!({
        "provider": "openai", "model": format!("model-{}", user.trim_start_matches("user-")), "task_type": "chat",
        "input_tokens": 100, "output_tokens": 10, "cost_usd": "0.01",
        "latency_ms": 100, "org_id": org, "user_id": user,
        "metadata": {"tags": [format!("tag-{}", user.trim_start_matches("user-"))]},
    })
}

async fn set_up(app: &TestApp) -> (World, Vec<Caller>) {
    for org in ["org-a", "org-b"] {
        admin(app, Method::POST, "/api/v1/orgs", json!({"id": org})).await;
    }
    for (user, org) in [
        ("user-a1", "org-a"),
        ("user-a2", "org-a"),
        ("user-b1", "org-b"),
    ] {
        admin(
            app,
            Method::POST,
            "/api/v1/users",
            json!({"id": user, "org_id": org, "email": format!("{user}@example.com")}),
        )
        .await;
    }
    admin(
        app,
        Method::PATCH,
        "/api/v1/users/user-a1",
        json!({"name": "Ann"}),
    )
    .await;
    let key = |org: &str, user: Option<&str>, role: &str| json!({"org_id": org, "user_id": user, "role": role, "name": format!("{org}-{role}")});
    let org_admin_a = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-a", None, "org_admin"),
    )
    .await;
    let member_a1 = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-a", Some("user-a1"), "member"),
    )
    .await;
    let member_a2 = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-a", Some("user-a2"), "member"),
    )
    .await;
    let no_user_a = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-a", None, "member"),
    )
    .await;
    let member_b1 = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-b", Some("user-b1"), "member"),
    )
    .await;
    let org_admin_b = admin(
        app,
        Method::POST,
        "/api/v1/keys",
        key("org-b", None, "org_admin"),
    )
    .await;
    admin(
        app,
        Method::POST,
        "/api/v1/usage",
        json!({"records": [usage("org-a", "user-a1"), usage("org-a", "user-a2"), usage("org-b", "user-b1")]}),
    )
    .await;
    app.recorder.flush().await.expect("records written");
    let budget = |org: &str, user: Option<&str>| json!({"org_id": org, "user_id": user, "budget_type": "monthly", "budget_amount_usd": "100"});
    let budget_a = admin(app, Method::POST, "/api/v1/budgets", budget("org-a", None)).await;
    let budget_a2 = admin(
        app,
        Method::POST,
        "/api/v1/budgets",
        budget("org-a", Some("user-a2")),
    )
    .await;
    let budget_b = admin(app, Method::POST, "/api/v1/budgets", budget("org-b", None)).await;
    let alert = |org: Option<&str>| {
        json!({"org_id": org, "severity": "high",
               "title": format!("alert-title-{}", org.unwrap_or("global")), "message": "m"})
    };
    let alert_a = admin(app, Method::POST, "/api/v1/alerts", alert(Some("org-a"))).await;
    let alert_b = admin(app, Method::POST, "/api/v1/alerts", alert(Some("org-b"))).await;
    let alert_global = admin(app, Method::POST, "/api/v1/alerts", alert(None)).await;
    let id = |value: &Value| value["id"].as_str().expect("an id").to_owned();
    let secret = |value: &Value| value["key"].as_str().expect("a secret").to_owned();
    let world = World {
        budget_a: id(&budget_a),
        budget_a2: id(&budget_a2),
        budget_b: id(&budget_b),
        alert_a: id(&alert_a),
        alert_b: id(&alert_b),
        alert_global: id(&alert_global),
        key_b: id(&member_b1),
        key_a2: id(&member_a2),
    };
    let other_org: Vec<String> = vec![
        "org-b".into(),
        "user-b1".into(),
        world.budget_b.clone(),
        world.alert_b.clone(),
        world.alert_global.clone(),
        "alert-title-global".into(),
        id(&member_b1),
        id(&org_admin_b),
    ];
    let mut other_user = other_org.clone();
    other_user.extend([
        "user-a2".to_owned(),
        world.budget_a2.clone(),
        id(&member_a2),
        id(&org_admin_a),
        id(&no_user_a),
    ]);
    let callers = vec![
        Caller {
            name: "admin token",
            token: ADMIN_TOKEN.to_owned(),
            level: Access::Admin,
            forbidden: vec![],
        },
        Caller {
            name: "org_admin of org-a",
            token: secret(&org_admin_a),
            level: Access::OrgAdmin,
            forbidden: other_org,
        },
        Caller {
            name: "member user-a1",
            token: secret(&member_a1),
            level: Access::Member,
            forbidden: other_user,
        },
        Caller {
            name: "member key without a user",
            token: secret(&no_user_a),
            level: Access::Member,
            forbidden: vec![],
        },
    ];
    (world, callers)
}

/// Who may call what, written out as the specification: the router's
/// declared rules must be exactly these, so loosening one is a visible,
/// reviewed change to this table too.
const EXPECTED_RULES: &[(&str, &str, Access)] = &[
    ("POST", "/usage", Access::OrgAdmin),
    ("GET", "/usage/records", Access::Member),
    ("GET", "/usage/export", Access::Member),
    ("GET", "/usage/stats", Access::Member),
    ("GET", "/usage/daily", Access::Member),
    ("GET", "/usage/hourly", Access::Member),
    ("GET", "/models/performance", Access::OrgAdmin),
    ("GET", "/projections", Access::Member),
    ("GET", "/budgets", Access::Member),
    ("POST", "/budgets", Access::OrgAdmin),
    ("GET", "/budgets/{id}", Access::Member),
    ("PUT", "/budgets/{id}", Access::OrgAdmin),
    ("DELETE", "/budgets/{id}", Access::OrgAdmin),
    ("GET", "/budgets/{id}/status", Access::Member),
    ("GET", "/alerts", Access::Member),
    ("POST", "/alerts", Access::OrgAdmin),
    ("POST", "/alerts/{id}/acknowledge", Access::OrgAdmin),
    ("POST", "/alerts/{id}/resolve", Access::OrgAdmin),
    ("GET", "/webhooks", Access::Admin),
    ("POST", "/webhooks", Access::Admin),
    ("DELETE", "/webhooks/{id}", Access::Admin),
    ("GET", "/webhooks/{id}/deliveries", Access::Admin),
    ("GET", "/providers", Access::Admin),
    ("PUT", "/providers/{provider}", Access::Admin),
    ("POST", "/providers/{provider}/refresh", Access::Admin),
    ("GET", "/reports", Access::Admin),
    ("POST", "/reports", Access::Admin),
    ("DELETE", "/reports/{id}", Access::Admin),
    ("GET", "/orgs", Access::Member),
    ("POST", "/orgs", Access::Admin),
    ("GET", "/users", Access::Member),
    ("POST", "/users", Access::OrgAdmin),
    ("GET", "/users/{id}", Access::Member),
    ("PATCH", "/users/{id}", Access::OrgAdmin),
    ("GET", "/keys", Access::Member),
    ("POST", "/keys", Access::Member),
    ("DELETE", "/keys/{id}", Access::Member),
    ("GET", "/audit", Access::OrgAdmin),
    ("GET", "/users/{id}/export", Access::Member),
    ("DELETE", "/users/{id}", Access::OrgAdmin),
];

fn rank(access: Access) -> u8 {
    match access {
        Access::Admin => 3,
        Access::OrgAdmin => 2,
        Access::Member => 1,
    }
}

/// The request each route gets: another tenant's ids in the path, another
/// tenant as the target of every change. Panics for a route it does not
/// know, so a new route cannot go untested.
fn request_for(rule: &RouteRule, world: &World) -> (String, Option<Value>) {
    let foreign_budget =
        json!({"org_id": "org-b", "budget_type": "daily", "budget_amount_usd": "1"});
    let (path, body) = match (rule.method.as_str(), rule.path) {
        ("POST", "/usage") => ("/usage".to_owned(), Some(usage("org-b", "user-b1"))),
        (
            "GET",
            path @ ("/usage/records"
            | "/usage/export"
            | "/usage/stats"
            | "/usage/daily"
            | "/usage/hourly"
            | "/models/performance"
            | "/projections"
            | "/budgets"
            | "/alerts"
            | "/webhooks"
            | "/providers"
            | "/reports"
            | "/orgs"
            | "/users"
            | "/keys"),
        ) => (path.to_owned(), None),
        ("POST", "/budgets") => ("/budgets".to_owned(), Some(foreign_budget)),
        ("GET", "/budgets/{id}") => (format!("/budgets/{}", world.budget_b), None),
        ("PUT", "/budgets/{id}") => (
            format!("/budgets/{}", world.budget_b),
            Some(json!({"budget_amount_usd": "0"})),
        ),
        ("DELETE", "/budgets/{id}") => (format!("/budgets/{}", world.budget_b), None),
        ("GET", "/budgets/{id}/status") => (format!("/budgets/{}/status", world.budget_b), None),
        ("POST", "/alerts") => (
            "/alerts".to_owned(),
            Some(json!({"org_id": "org-b", "severity": "low", "title": "t", "message": "m"})),
        ),
        ("POST", "/alerts/{id}/acknowledge") => {
            (format!("/alerts/{}/acknowledge", world.alert_b), None)
        }
        ("POST", "/alerts/{id}/resolve") => (format!("/alerts/{}/resolve", world.alert_b), None),
        ("POST", "/webhooks") => (
            "/webhooks".to_owned(),
            Some(json!({"url": "https://hooks.example.com/x"})),
        ),
        ("DELETE", "/webhooks/{id}") => (
            "/webhooks/0195a1b2-0000-7000-8000-000000000000".to_owned(),
            None,
        ),
        ("GET", "/webhooks/{id}/deliveries") => (
            "/webhooks/0195a1b2-0000-7000-8000-000000000000/deliveries".to_owned(),
            None,
        ),
        ("PUT", "/providers/{provider}") => (
            "/providers/openai".to_owned(),
            Some(json!({"low_balance_threshold_usd": "5"})),
        ),
        ("POST", "/providers/{provider}/refresh") => ("/providers/openai/refresh".to_owned(), None),
        ("POST", "/reports") => (
            "/reports".to_owned(),
            Some(json!({"name": "r", "frequency": "daily", "folder": "/nonexistent"})),
        ),
        ("DELETE", "/reports/{id}") => (
            "/reports/0195a1b2-0000-7000-8000-000000000000".to_owned(),
            None,
        ),
        ("POST", "/orgs") => ("/orgs".to_owned(), Some(json!({"id": "org-new"}))),
        ("POST", "/users") => (
            "/users".to_owned(),
            Some(json!({"id": "user-new", "org_id": "org-b"})),
        ),
        ("GET", "/users/{id}") => ("/users/user-b1".to_owned(), None),
        ("PATCH", "/users/{id}") => (
            "/users/user-b1".to_owned(),
            Some(json!({"name": "changed", "role": "org_admin"})),
        ),
        ("POST", "/keys") => (
            "/keys".to_owned(),
            Some(json!({"org_id": "org-b", "role": "member"})),
        ),
        ("DELETE", "/keys/{id}") => (format!("/keys/{}", world.key_b), None),
        // Callers see their own attempts (with the ids they typed); what
        // must not show is what others did in another organization.
        ("GET", "/users/{id}/export") => ("/users/user-b1/export".to_owned(), None),
        ("DELETE", "/users/{id}") => ("/users/user-b1".to_owned(), None),
        ("GET", "/audit") => ("/audit?actor=admin-token".to_owned(), None),
        (method, path) => panic!("no tenancy case for {method} {path}: add one to request_for"),
    };
    (format!("/api/v1{path}"), body)
}

async fn every_route_enforces_its_rule_and_the_callers_tenant(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let (world, callers) = set_up(&app).await;
    let rules = api_rules();
    let mut declared: Vec<(String, &str, Access)> = rules
        .iter()
        .map(|rule| (rule.method.to_string(), rule.path, rule.access))
        .collect();
    let mut expected: Vec<(String, &str, Access)> = EXPECTED_RULES
        .iter()
        .map(|(method, path, access)| ((*method).to_owned(), *path, *access))
        .collect();
    declared.sort_by(|left, right| (left.1, &left.0).cmp(&(right.1, &right.0)));
    expected.sort_by(|left, right| (left.1, &left.0).cmp(&(right.1, &right.0)));
    assert_eq!(
        declared, expected,
        "the declared rules are the specified ones"
    );

    for caller in &callers[1..] {
        for rule in &rules {
            let (path, body) = request_for(rule, &world);
            let (status, json, text) =
                call(&app, &caller.token, rule.method.clone(), &path, body).await;
            let what = format!("{} {} {path} as {}", rule.method, rule.path, caller.name);
            let allowed = rank(caller.level) >= rank(rule.access)
                && caller.name != "member key without a user";
            if !allowed {
                assert_eq!(status, 403, "{what}: {text}");
                assert_eq!(json["error"]["type"], "permission_error", "{what}: {text}");
                continue;
            }
            if rule.method == Method::GET {
                assert!(matches!(status, 200 | 403 | 404), "{what}: {status} {text}");
            } else {
                // Every change here targets another tenant.
                assert!(
                    matches!(status, 403 | 404 | 422),
                    "{what} changed another tenant's data: {status} {text}"
                );
            }
            if status == 200 {
                for marker in &caller.forbidden {
                    assert!(
                        !text.contains(marker.as_str()),
                        "{what} leaked `{marker}`: {text}"
                    );
                }
            }
        }
        // Filters naming another tenant are refused, not answered.
        for path in [
            "/api/v1/usage/records?org_id=org-b",
            "/api/v1/usage/stats?org_id=org-b",
            "/api/v1/usage/export?org_id=org-b",
            "/api/v1/usage/daily?user_id=user-b1&org_id=org-b",
            "/api/v1/budgets?org_id=org-b",
            "/api/v1/alerts?org_id=org-b",
            "/api/v1/keys?org_id=org-b",
            "/api/v1/users?org_id=org-b",
        ] {
            let (status, _, text) = call(&app, &caller.token, Method::GET, path, None).await;
            assert_eq!(status, 403, "{path} as {}: {text}", caller.name);
        }
    }

    // Scoping narrows, it does not just refuse: the org admin sees both of
    // org-a's users, the member only themselves.
    let org_admin = &callers[1];
    let member = &callers[2];
    let records = |token: String| {
        let app = &app;
        async move {
            let (status, json, text) =
                call(app, &token, Method::GET, "/api/v1/usage/records", None).await;
            assert_eq!(status, 200, "{text}");
            let mut users: Vec<String> = json["data"]
                .as_array()
                .expect("a list")
                .iter()
                .map(|record| record["user_id"].as_str().unwrap_or("").to_owned())
                .collect();
            users.sort();
            users
        }
    };
    assert_eq!(
        records(org_admin.token.clone()).await,
        ["user-a1", "user-a2"]
    );
    assert_eq!(records(member.token.clone()).await, ["user-a1"]);
    let (_, stats, _) = call(
        &app,
        &member.token,
        Method::GET,
        "/api/v1/usage/stats",
        None,
    )
    .await;
    assert_eq!(stats["total_requests"], 1, "{stats}");
    let (_, budgets, text) = call(&app, &member.token, Method::GET, "/api/v1/budgets", None).await;
    let ids: Vec<&str> = budgets["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|budget| budget["id"].as_str())
        .collect();
    assert_eq!(ids, [world.budget_a.as_str()], "{text}");
    let (_, alerts, text) = call(&app, &member.token, Method::GET, "/api/v1/alerts", None).await;
    let ids: Vec<&str> = alerts["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|alert| alert["id"].as_str())
        .collect();
    assert_eq!(ids, [world.alert_a.as_str()], "{text}");
    let (status, _, _) = call(
        &app,
        &member.token,
        Method::DELETE,
        &format!("/api/v1/keys/{}", world.key_a2),
        None,
    )
    .await;
    assert_eq!(status, 404, "a member cannot revoke a colleague's key");

    // Nothing of org-b changed.
    let (_, budget, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        &format!("/api/v1/budgets/{}", world.budget_b),
        None,
    )
    .await;
    assert_eq!(budget["budget_amount_usd"], "100", "{budget}");
    let (_, alerts, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/alerts?org_id=org-b",
        None,
    )
    .await;
    assert_eq!(alerts["data"].as_array().map(Vec::len), Some(1), "{alerts}");
    assert_eq!(alerts["data"][0]["status"], "active", "{alerts}");
    let (_, keys, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/keys?org_id=org-b",
        None,
    )
    .await;
    assert!(
        keys["data"]
            .as_array()
            .expect("a list")
            .iter()
            .all(|key| key["revoked_at"].is_null()),
        "{keys}"
    );
    let (_, user, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/users/user-b1",
        None,
    )
    .await;
    assert_eq!(
        (user["name"].clone(), user["role"].clone()),
        (Value::Null, json!("member"))
    );
    let (_, users, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/users?org_id=org-b",
        None,
    )
    .await;
    assert_eq!(users["data"].as_array().map(Vec::len), Some(1), "{users}");
    app.recorder.flush().await.expect("flushed");
    let (_, b_records, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/usage/records?org_id=org-b",
        None,
    )
    .await;
    assert_eq!(
        b_records["data"].as_array().map(Vec::len),
        Some(1),
        "{b_records}"
    );

    // The administrator reaches every route (nothing is 401, 403 or 405).
    for rule in &rules {
        let (path, body) = request_for(rule, &world);
        let (status, _, text) = call(&app, ADMIN_TOKEN, rule.method.clone(), &path, body).await;
        assert!(
            !matches!(status, 401 | 403 | 405),
            "{} {path} as admin: {status} {text}",
            rule.method
        );
    }
    // Every kind of change is in the audit log, by whoever made it.
    let (status, audit, text) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/audit?limit=1000",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let entries = audit["data"].as_array().expect("a list");
    for action in rules.iter().filter_map(|rule| rule.audit) {
        for actor in ["admin-token", "key:"] {
            assert!(
                entries.iter().any(|entry| entry["action"] == action
                    && entry["actor"]
                        .as_str()
                        .is_some_and(|who| who.starts_with(actor))),
                "no `{action}` entry by {actor}: {text}"
            );
        }
    }
    app.stop().await;
}

async fn fields_a_caller_may_not_set_are_refused(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    admin(&app, Method::POST, "/api/v1/orgs", json!({"id": "org-a"})).await;
    for (user, role) in [("olga", "org_admin"), ("ann", "member")] {
        admin(
            &app,
            Method::POST,
            "/api/v1/users",
            json!({"id": user, "org_id": "org-a", "role": role}),
        )
        .await;
    }
    let olga = admin(
        &app,
        Method::POST,
        "/api/v1/keys",
        json!({"org_id": "org-a", "user_id": "olga", "role": "org_admin"}),
    )
    .await["key"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let ann = admin(
        &app,
        Method::POST,
        "/api/v1/keys",
        json!({"org_id": "org-a", "user_id": "ann"}),
    )
    .await["key"]
        .as_str()
        .expect("a secret")
        .to_owned();
    let cases: Vec<(&str, &str, Method, &str, Value, u16)> = vec![
        // Raising one's own role, directly or through a new key.
        (
            "olga",
            &olga,
            Method::PATCH,
            "/api/v1/users/olga",
            json!({"role": "admin"}),
            403,
        ),
        (
            "olga",
            &olga,
            Method::POST,
            "/api/v1/keys",
            json!({"role": "admin"}),
            403,
        ),
        (
            "ann",
            &ann,
            Method::POST,
            "/api/v1/keys",
            json!({"role": "org_admin"}),
            403,
        ),
        (
            "ann",
            &ann,
            Method::POST,
            "/api/v1/keys",
            json!({"user_id": "olga"}),
            403,
        ),
        // Moving to another organization, or renaming an id.
        (
            "olga",
            &olga,
            Method::PATCH,
            "/api/v1/users/ann",
            json!({"org_id": "org-b"}),
            422,
        ),
        (
            "olga",
            &olga,
            Method::PATCH,
            "/api/v1/users/ann",
            json!({"id": "root"}),
            422,
        ),
        // Fields that do not exist are not ignored.
        (
            "olga",
            &olga,
            Method::POST,
            "/api/v1/users",
            json!({"id": "x", "is_admin": true}),
            422,
        ),
        (
            "olga",
            &olga,
            Method::POST,
            "/api/v1/keys",
            json!({"scopes": ["*"]}),
            422,
        ),
        (
            "olga",
            &olga,
            Method::PATCH,
            "/api/v1/users/ann",
            json!({"admin": true}),
            422,
        ),
        // Creating an admin, or a user elsewhere.
        (
            "olga",
            &olga,
            Method::POST,
            "/api/v1/users",
            json!({"id": "y", "role": "admin"}),
            403,
        ),
        (
            "olga",
            &olga,
            Method::POST,
            "/api/v1/users",
            json!({"id": "z", "org_id": "default"}),
            403,
        ),
        // A member changes nobody.
        (
            "ann",
            &ann,
            Method::PATCH,
            "/api/v1/users/ann",
            json!({"role": "org_admin"}),
            403,
        ),
    ];
    for (who, token, method, path, body, expected) in cases {
        let (status, answer, text) =
            call(&app, token, method.clone(), path, Some(body.clone())).await;
        assert_eq!(status, expected, "{who}: {method} {path} {body} -> {text}");
        assert!(answer["error"]["message"].is_string(), "{text}");
    }
    // What they may do still works: an org admin promotes a member; a member
    // makes and revokes a key of their own.
    let (status, _, text) = call(
        &app,
        &olga,
        Method::PATCH,
        "/api/v1/users/ann",
        Some(json!({"role": "org_admin", "name": "Ann"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, own, text) = call(&app, &ann, Method::POST, "/api/v1/keys", Some(json!({}))).await;
    assert_eq!(
        (status, own["user_id"].as_str()),
        (201, Some("ann")),
        "{text}"
    );
    let (status, _, text) = call(
        &app,
        &ann,
        Method::DELETE,
        &format!("/api/v1/keys/{}", own["id"].as_str().expect("an id")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, users, _) = call(&app, ADMIN_TOKEN, Method::GET, "/api/v1/users", None).await;
    let roles: Vec<(String, String)> = users["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|user| {
            (
                user["id"].as_str().unwrap_or("").to_owned(),
                user["role"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            ("ann".to_owned(), "org_admin".to_owned()),
            ("olga".to_owned(), "org_admin".to_owned())
        ]
    );
    // Nobody acts on a higher role, or mints keys that act as a peer.
    admin(
        &app,
        Method::POST,
        "/api/v1/users",
        json!({"id": "root", "org_id": "org-a", "role": "admin"}),
    )
    .await;
    let root_key = admin(
        &app,
        Method::POST,
        "/api/v1/keys",
        json!({"org_id": "org-a", "user_id": "root", "role": "admin"}),
    )
    .await["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    for (method, path, body) in [
        (
            Method::PATCH,
            "/api/v1/users/root".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/v1/users/root".to_owned(), None),
        (Method::DELETE, format!("/api/v1/keys/{root_key}"), None),
        (
            Method::POST,
            "/api/v1/keys".to_owned(),
            Some(json!({"user_id": "ann"})),
        ),
    ] {
        let (status, _, text) = call(&app, &olga, method.clone(), &path, body).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
    }
    // Demoting a user demotes their keys at once.
    let (status, _, text) = call(
        &app,
        ADMIN_TOKEN,
        Method::PATCH,
        "/api/v1/users/olga",
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = call(
        &app,
        &olga,
        Method::POST,
        "/api/v1/users",
        Some(json!({"id": "late"})),
    )
    .await;
    assert_eq!(
        status, 403,
        "a demoted org admin's key is a member's now: {text}"
    );
    app.stop().await;
}

/// Ingested records name users freely: erasing `sam` of one organization
/// leaves another organization's `sam` alone.
async fn erasure_stays_in_its_organization(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    for org in ["org-x", "org-y"] {
        admin(&app, Method::POST, "/api/v1/orgs", json!({"id": org})).await;
    }
    admin(
        &app,
        Method::POST,
        "/api/v1/users",
        json!({"id": "sam", "org_id": "org-x"}),
    )
    .await;
    admin(
        &app,
        Method::POST,
        "/api/v1/usage",
        json!({"records": [usage("org-x", "sam"), usage("org-y", "sam")]}),
    )
    .await;
    app.recorder.flush().await.expect("written");
    let (status, erased, text) =
        call(&app, ADMIN_TOKEN, Method::DELETE, "/api/v1/users/sam", None).await;
    assert_eq!(
        (status, erased["usage_records"].as_u64()),
        (200, Some(1)),
        "{text}"
    );
    let (_, left, text) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/usage/records?org_id=org-y",
        None,
    )
    .await;
    assert_eq!(left["data"].as_array().map(Vec::len), Some(1), "{text}");
    assert_eq!(left["data"][0]["user_id"], "sam");
    let (_, stats, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/usage/stats?org_id=org-y&user_id=sam",
        None,
    )
    .await;
    assert_eq!(stats["total_requests"], 1, "{stats}");
    app.stop().await;
}

/// Counts rows of `table` on `connection` (no input reaches the SQL text:
/// table names come from this file).
async fn visible(connection: &mut sqlx::PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(connection)
        .await
        .unwrap_or_else(|error| panic!("count {table}: {error}"))
}

async fn act_as(connection: &mut sqlx::PgConnection, role: &str, org: &str, user: &str) {
    sqlx::query(
        "SELECT set_config('tollgate.role', $1, false), set_config('tollgate.org', $2, false), \
         set_config('tollgate.user', $3, false)",
    )
    .bind(role)
    .bind(org)
    .bind(user)
    .execute(connection)
    .await
    .expect("settings");
}

/// Row-level security checked in PostgreSQL itself, below the server: as
/// the server's role, a query without a caller's settings sees nothing, and
/// with them sees only the caller's rows; the audit log cannot be changed;
/// every table is covered; the server really runs as that role.
#[tokio::test]
async fn postgres_enforces_tenancy_below_the_server() {
    use sqlx::Connection;
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let (world, _) = set_up(&app).await;
    app.stop().await;
    let store = common::connect_store(&database.url).await;
    assert_eq!(
        store.working_roles().await.expect("roles"),
        Some(("tollgate_app".to_owned(), "tollgate_app".to_owned())),
        "the server never works as the tables' owner"
    );
    store.close().await;

    let mut connection = sqlx::PgConnection::connect(&database.url)
        .await
        .expect("connect");
    let (bypass, superuser): (bool, bool) = sqlx::query_as(
        "SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = 'tollgate_app'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("the role exists");
    assert!(!bypass && !superuser);
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' \
           AND c.relname <> '_sqlx_migrations' \
           AND (NOT c.relrowsecurity OR NOT c.relforcerowsecurity \
                OR NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) \
                OR pg_get_userbyid(c.relowner) = 'tollgate_app')",
    )
    .fetch_all(&mut connection)
    .await
    .expect("catalog");
    assert_eq!(
        unprotected,
        Vec::<String>::new(),
        "tables without forced RLS and a policy"
    );
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
         AND tablename <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut connection)
    .await
    .expect("tables");

    sqlx::raw_sql("SET ROLE tollgate_app")
        .execute(&mut connection)
        .await
        .expect("become the server's role");
    // No caller: nothing, in every table.
    for table in &tables {
        assert_eq!(
            visible(&mut connection, table).await,
            0,
            "{table} without a caller"
        );
    }
    // An organization administrator: their organization's rows only.
    act_as(&mut connection, "org_admin", "org-a", "").await;
    assert_eq!(visible(&mut connection, "ai_provider_usage").await, 2);
    assert_eq!(visible(&mut connection, "ai_usage_daily").await, 2);
    assert_eq!(visible(&mut connection, "ai_usage_budgets").await, 2);
    assert_eq!(visible(&mut connection, "ai_usage_alerts").await, 1);
    assert_eq!(visible(&mut connection, "users").await, 2);
    assert_eq!(visible(&mut connection, "organizations").await, 1);
    assert_eq!(visible(&mut connection, "webhooks").await, 0);
    let foreign: Result<_, _> =
        sqlx::query("UPDATE ai_usage_budgets SET budget_amount_nano_usd = 0 WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&world.budget_b).expect("a uuid"))
            .execute(&mut connection)
            .await;
    assert_eq!(
        foreign.expect("runs").rows_affected(),
        0,
        "another org's budget is invisible"
    );
    let smuggled = sqlx::query(
        "INSERT INTO organizations (id, name, created_at) VALUES ('org-c', 'c', now())",
    )
    .execute(&mut connection)
    .await;
    assert!(smuggled.is_err(), "org admins cannot make organizations");
    // A member: their own usage and keys, their organization's alerts,
    // the budgets that are not another user's.
    act_as(&mut connection, "member", "org-a", "user-a1").await;
    assert_eq!(visible(&mut connection, "ai_provider_usage").await, 1);
    assert_eq!(visible(&mut connection, "ai_usage_daily").await, 1);
    assert_eq!(visible(&mut connection, "ai_model_performance").await, 0);
    assert_eq!(visible(&mut connection, "ai_usage_budgets").await, 1);
    assert_eq!(visible(&mut connection, "ai_usage_alerts").await, 1);
    assert_eq!(visible(&mut connection, "api_keys").await, 1);
    assert_eq!(visible(&mut connection, "users").await, 1);
    let hidden: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ai_provider_usage WHERE user_id = 'user-a2' OR org_id = 'org-b'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("count");
    assert_eq!(hidden, 0);
    let stolen = sqlx::query(
        "INSERT INTO api_keys (id, org_id, user_id, role, key_prefix, key_hash, created_at) \
         VALUES ($1, 'org-b', 'user-b1', 'admin', 'tg_x', 'x', now())",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut connection)
    .await;
    assert!(
        stolen.is_err(),
        "a key in another org is refused by the policy"
    );
    // Even the server's own work cannot rewrite or erase the audit log.
    act_as(&mut connection, "system", "", "").await;
    assert!(visible(&mut connection, "ai_provider_usage").await >= 3);
    for statement in [
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .expect_err("the audit log is append-only");
        assert!(
            error.to_string().contains("permission denied"),
            "{statement}: {error}"
        );
    }
    connection.close().await.expect("close");
}

async fn audit_entries(app: &TestApp, token: &str, query: &str) -> (u16, Vec<Value>, String) {
    let (status, json, text) = call(
        app,
        token,
        Method::GET,
        &format!("/api/v1/audit{query}"),
        None,
    )
    .await;
    let entries = json["data"].as_array().cloned().unwrap_or_default();
    (status, entries, text)
}

async fn every_change_is_audited_once_without_secrets(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let (world, callers) = set_up(&app).await;
    let (status, entries, text) = audit_entries(&app, ADMIN_TOKEN, "?limit=1000").await;
    assert_eq!(status, 200, "{text}");
    let count = |action: &str| {
        entries
            .iter()
            .filter(|entry| entry["action"] == action)
            .count()
    };
    for (action, expected) in [
        ("org.create", 2),
        ("user.create", 3),
        ("user.update", 1),
        ("key.create", 6),
        ("budget.create", 3),
        ("alert.create", 3),
    ] {
        assert_eq!(count(action), expected, "{action}: {text}");
    }
    assert_eq!(
        entries.len(),
        18,
        "ingest and reads are not changes: {text}"
    );
    for entry in &entries {
        assert_eq!(entry["actor"], "admin-token", "{entry}");
        assert_eq!(entry["result"], "ok", "{entry}");
        assert_eq!(entry["client_addr"], "127.0.0.1", "{entry}");
        assert!(
            entry["created_at"].is_string() && entry["target"].is_string(),
            "{entry}"
        );
    }
    let budget = entries
        .iter()
        .find(|entry| entry["target"] == world.budget_b.as_str())
        .expect("the budget's entry");
    assert_eq!(
        (budget["action"].as_str(), budget["org_id"].as_str()),
        (Some("budget.create"), Some("org-b"))
    );
    // Newest first, with a cursor.
    let (_, first, _) = audit_entries(&app, ADMIN_TOKEN, "?limit=5").await;
    let before = first[4]["id"].as_i64().expect("an id");
    let (_, next, _) =
        audit_entries(&app, ADMIN_TOKEN, &format!("?limit=5&before_id={before}")).await;
    assert!(next.iter().all(|entry| entry["id"].as_i64() < Some(before)));
    assert_eq!(next.len(), 5);

    // A refused change is recorded as denied, by whoever tried.
    let org_admin = &callers[1];
    let (status, _, _) = call(
        &app,
        &org_admin.token,
        Method::POST,
        "/api/v1/orgs",
        Some(json!({"id": "mine"})),
    )
    .await;
    assert_eq!(status, 403);
    let (_, created, text) = audit_entries(&app, &org_admin.token, "?action=org.create").await;
    // They see the administrator's creation of their own organization, and
    // their own refused attempt.
    assert_eq!(created.len(), 2, "{text}");
    let mine: Vec<&Value> = created
        .iter()
        .filter(|entry| entry["actor"] != "admin-token")
        .collect();
    assert_eq!(mine.len(), 1, "{text}");
    assert_eq!(mine[0]["result"], "denied");
    assert!(
        mine[0]["actor"]
            .as_str()
            .is_some_and(|actor| actor.starts_with("key:"))
    );
    // Organization administrators read their organization's entries only.
    let (status, theirs, text) = audit_entries(&app, &org_admin.token, "?limit=1000").await;
    assert_eq!(status, 200, "{text}");
    assert!(!theirs.is_empty());
    assert!(
        theirs.iter().all(|entry| entry["org_id"] == "org-a"),
        "{text}"
    );
    let (status, _, _) = audit_entries(&app, &org_admin.token, "?org_id=org-b").await;
    assert_eq!(status, 403);
    let (status, _, _) = audit_entries(&app, &callers[2].token, "").await;
    assert_eq!(status, 403, "members do not read the audit log");

    // Failed logins: recorded, once a minute per address.
    for _ in 0..3 {
        let (status, _, _) = call(
            &app,
            "tg_0000000000000000000000000000000000000000000000000",
            Method::GET,
            "/api/v1/budgets",
            None,
        )
        .await;
        assert_eq!(status, 401);
    }
    let (_, failed, text) = audit_entries(&app, ADMIN_TOKEN, "?action=auth.failed").await;
    assert_eq!(failed.len(), 1, "{text}");
    assert_eq!(
        (failed[0]["actor"].as_str(), failed[0]["result"].as_str()),
        (Some("anonymous"), Some("denied"))
    );

    // No secret anywhere in the log: not the keys made, not the admin token.
    let (_, all, text) = audit_entries(&app, ADMIN_TOKEN, "?limit=1000").await;
    assert!(all.len() >= 20);
    for caller in &callers {
        assert!(!text.contains(&caller.token), "a secret in the audit log");
    }
    app.stop().await;
}

/// Rows in any table, any column, whose text holds `needle` (as the
/// database's owner, below row-level security).
async fn traces(database: &TestDatabase, needle: &str) -> Vec<String> {
    let pattern = format!("%{needle}%");
    let mut found = Vec::new();
    if database.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&database.url)
            .await
            .expect("open");
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .expect("tables");
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
                .bind(&table)
                .fetch_all(&pool)
                .await
                .expect("columns");
            for column in columns {
                let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE ?"
                )))
                .bind(&pattern)
                .fetch_one(&pool)
                .await
                .expect("scan");
                if count > 0 {
                    found.push(format!("{table}.{column}: {count}"));
                }
            }
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&database.url).await.expect("connect");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_all(&pool)
        .await
        .expect("tables");
        for table in tables {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} AS row WHERE row::text LIKE $1"
            )))
            .bind(&pattern)
            .fetch_one(&pool)
            .await
            .expect("scan");
            if count > 0 {
                found.push(format!("{table}: {count}"));
            }
        }
        pool.close().await;
    }
    found
}

async fn a_users_export_holds_everything_and_erasure_leaves_no_trace(database: &TestDatabase) {
    let app = spawn_app(test_config(&database.url, &database.spool_dir(), &[])).await;
    let (world, callers) = set_up(&app).await;
    let org_admin = &callers[1];
    let member = &callers[2];
    // A member exports themselves; an org admin exports a user of theirs.
    let (status, own, text) = call(
        &app,
        &member.token,
        Method::GET,
        "/api/v1/users/user-a1/export",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(own["user"]["id"], "user-a1");
    assert_eq!(own["user"]["email"], "user-a1@example.com");
    assert_eq!(own["user"]["name"], "Ann");
    assert_eq!(own["keys"].as_array().map(Vec::len), Some(1), "{text}");
    assert!(
        own["keys"][0].get("key").is_none() && !text.contains(&member.token),
        "no secret"
    );
    assert_eq!(
        own["usage_records"].as_array().map(Vec::len),
        Some(1),
        "{text}"
    );
    assert_eq!(own["usage_records"][0]["model"], "model-a1");
    assert_eq!(own["budgets"].as_array().map(Vec::len), Some(0));
    let (status, _, _) = call(
        &app,
        &member.token,
        Method::GET,
        "/api/v1/users/user-a2/export",
        None,
    )
    .await;
    assert_eq!(status, 404, "members export only themselves");
    let (status, theirs, text) = call(
        &app,
        &org_admin.token,
        Method::GET,
        "/api/v1/users/user-a2/export",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        theirs["budgets"][0]["id"],
        world.budget_a2.as_str(),
        "{text}"
    );
    assert_eq!(theirs["usage_records"][0]["user_id"], "user-a2", "{text}");
    assert!(
        theirs["audit_entries"]
            .as_array()
            .is_some_and(|entries| !entries.is_empty()),
        "{text}"
    );
    let a2_token = {
        let (_, created, _) = call(
            &app,
            &org_admin.token,
            Method::POST,
            "/api/v1/keys",
            Some(json!({"user_id": "user-a2"})),
        )
        .await;
        created["key"].as_str().expect("a secret").to_owned()
    };
    let (status, _, _) = call(&app, &a2_token, Method::GET, "/api/v1/usage/stats", None).await;
    assert_eq!(status, 200);
    let (_, before, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/usage/stats?org_id=org-a",
        None,
    )
    .await;

    // Erasure.
    let (status, erased, text) = call(
        &app,
        &org_admin.token,
        Method::DELETE,
        "/api/v1/users/user-a2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        (
            erased["usage_records"].as_u64(),
            erased["keys"].as_u64(),
            erased["budgets"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{text}"
    );
    let pseudonym = erased["pseudonym"]
        .as_str()
        .expect("a pseudonym")
        .to_owned();
    let (status, _, _) = call(&app, &a2_token, Method::GET, "/api/v1/usage/stats", None).await;
    assert_eq!(status, 401, "their keys stop working at once");
    let (status, _, _) = call(
        &app,
        &org_admin.token,
        Method::GET,
        "/api/v1/users/user-a2",
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Rollups keep the organization's totals, anonymously.
    let (_, after, _) = call(
        &app,
        ADMIN_TOKEN,
        Method::GET,
        "/api/v1/usage/stats?org_id=org-a",
        None,
    )
    .await;
    assert_eq!(after["total_requests"], before["total_requests"], "{after}");
    assert_eq!(after["total_cost_usd"], before["total_cost_usd"], "{after}");
    // The audit log keeps the deletion under the pseudonym.
    let (_, entries, text) = audit_entries(&app, ADMIN_TOKEN, "?action=user.delete").await;
    assert_eq!(entries.len(), 1, "{text}");
    assert_eq!(entries[0]["target"].as_str(), Some(pseudonym.as_str()));
    app.stop().await;
    // No trace in any table, any column.
    assert_eq!(
        traces(database, "user-a2").await,
        Vec::<String>::new(),
        "user-a2 left behind"
    );
    // Their record is gone from the ledger; its model and tag live on only
    // in the anonymous rollups.
    let ledger = traces(database, "model-a2").await;
    assert!(
        ledger
            .iter()
            .all(|place| !place.starts_with("ai_provider_usage")),
        "{ledger:?}"
    );
    assert!(
        !traces(database, "user-a1").await.is_empty(),
        "the scan finds what is there"
    );
}

/// `sslmode` in the URL is honoured: with `require`, the server's
/// connections to PostgreSQL are encrypted.
#[tokio::test]
async fn postgres_connections_use_tls_when_the_url_asks() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let url = format!("{}?sslmode=require", database.url);
    let store = common::connect_store(&url).await;
    store.working_roles().await.expect("a connection");
    let admin = sqlx::PgPool::connect(&database.url).await.expect("connect");
    let encrypted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND ssl",
    )
    .fetch_one(&admin)
    .await
    .expect("pg_stat_ssl");
    assert!(
        encrypted >= 2,
        "both pools' connections are encrypted: {encrypted}"
    );
    store.close().await;
    admin.close().await;
}
