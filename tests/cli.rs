//! The `tollgate` binary: command output, and one-line errors without panics
//! or backtraces.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "tests fail loudly and run their own tasks"
)]

use std::process::{Command, Output};

fn tollgate(args: &[&str], folder: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(folder)
        .env_remove("DATABASE_URL")
        .env_remove("TOLLGATE_CONFIG")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_one_line_error(output: &Output, expected: &str) {
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("tollgate: error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[test]
fn migrate_prints_what_it_created_and_a_second_run_is_harmless() {
    let folder = tempfile::TempDir::new().unwrap();
    let first = tollgate(&["migrate"], folder.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let printed = text(&first.stdout);
    assert!(
        printed.contains("Applied migration 0001 initial"),
        "{printed}"
    );
    for table in [
        "ai_provider_usage",
        "ai_provider_credits",
        "ai_usage_alerts",
        "ai_usage_budgets",
        "ai_model_performance",
        "organizations",
        "users",
        "api_keys",
        "audit_log",
    ] {
        assert!(printed.contains(table), "{table} in {printed}");
    }
    assert!(
        folder.path().join("tollgate.db").exists(),
        "the default database is sqlite://tollgate.db"
    );
    let second = tollgate(&["migrate"], folder.path());
    assert!(second.status.success());
    assert!(
        text(&second.stdout).contains("up to date"),
        "{}",
        text(&second.stdout)
    );
}

#[test]
fn configuration_and_database_mistakes_are_one_line_errors() {
    let folder = tempfile::TempDir::new().unwrap();
    std::fs::write(
        folder.path().join("typo.toml"),
        "[recorder]\nbatch_sise = 5\n",
    )
    .unwrap();
    std::fs::write(folder.path().join("broken.toml"), "[server\n").unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--database-url", "mysql://db/x", "migrate"],
            "unsupported database URL",
        ),
        (
            &[
                "--database-url",
                "postgres://nobody@127.0.0.1:1/x",
                "migrate",
            ],
            "cannot connect to database",
        ),
        (&["--config", "typo.toml", "migrate"], "recorder.batch_sise"),
        (&["--config", "broken.toml", "migrate"], "not valid TOML"),
        (
            &["--config", "missing.toml", "migrate"],
            "cannot read config file",
        ),
        (&["serve", "--listen", "not-an-address"], "server.listen"),
        // Reachable from other machines with nobody in charge: refused.
        (
            &["serve", "--listen", "0.0.0.0:0"],
            "refusing to listen on 0.0.0.0:0 without an admin credential",
        ),
    ];
    for (args, expected) in cases {
        assert_one_line_error(&tollgate(args, folder.path()), expected);
    }
}

#[test]
fn a_database_password_never_appears_in_an_error() {
    let folder = tempfile::TempDir::new().unwrap();
    let output = tollgate(
        &[
            "--database-url",
            "postgres://app:hunter2@127.0.0.1:1/x",
            "migrate",
        ],
        folder.path(),
    );
    assert_one_line_error(&output, "postgres://app:***@127.0.0.1:1/x");
    assert!(!text(&output.stderr).contains("hunter2"));
}

#[test]
fn pricing_show_prints_prices_with_their_source_and_date() {
    let folder = tempfile::TempDir::new().unwrap();
    let output = tollgate(&["pricing", "show", "gpt-4o-mini"], folder.path());
    assert!(output.status.success());
    let printed = text(&output.stdout);
    assert!(printed.contains("gpt-4o-mini (openai)"), "{printed}");
    assert!(
        printed.contains("input_mtok") && printed.contains("0.15"),
        "{printed}"
    );
    assert!(
        printed.contains("cache_read_mtok") && printed.contains("0.075"),
        "{printed}"
    );
    assert!(
        printed.contains("genai-prices") && printed.contains("as of 2026-11-28"),
        "{printed}"
    );
    let openrouter = text(
        &tollgate(
            &["pricing", "show", "openrouter/openai/gpt-4o"],
            folder.path(),
        )
        .stdout,
    );
    assert!(openrouter.contains("(openrouter)"), "{openrouter}");
    assert_one_line_error(
        &tollgate(&["pricing", "show", "gpt-unknown-9"], folder.path()),
        "no price for model `gpt-unknown-9`",
    );
}

#[test]
fn configured_prices_show_up_in_the_catalog() {
    let folder = tempfile::TempDir::new().unwrap();
    std::fs::write(
        folder.path().join("prices.toml"),
        "[pricing.models]\n\"local/llama3.1:70b\" = { input_mtok = \"0.20\", output_mtok = 0.6 }\n",
    )
    .unwrap();
    let output = tollgate(
        &[
            "--config",
            "prices.toml",
            "pricing",
            "show",
            "local/llama3.1:70b",
        ],
        folder.path(),
    );
    let printed = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(printed.contains("your configuration"), "{printed}");
    assert!(
        printed.contains("0.20") && printed.contains("0.6"),
        "{printed}"
    );
    let listed = text(
        &tollgate(
            &[
                "--config",
                "prices.toml",
                "pricing",
                "list",
                "--provider",
                "local",
            ],
            folder.path(),
        )
        .stdout,
    );
    assert!(listed.contains("llama3.1:70b"), "{listed}");
}

#[test]
fn keys_are_created_once_listed_without_their_secret_and_revoked() {
    let folder = tempfile::TempDir::new().unwrap();
    let created = tollgate(
        &[
            "keys", "create", "--org", "acme", "--user", "alice", "--name", "ci",
        ],
        folder.path(),
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let secret = text(&created.stdout).trim().to_owned();
    assert!(secret.starts_with("tg_") && secret.len() == 51, "{secret}");
    let listed = text(&tollgate(&["keys", "list", "--org", "acme"], folder.path()).stdout);
    assert!(
        listed.contains("acme") && listed.contains("alice") && listed.contains("active"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "the secret is never shown again");
    let id = listed
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let revoked = tollgate(&["keys", "revoke", &id], folder.path());
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    assert!(text(&tollgate(&["keys", "list"], folder.path()).stdout).contains("revoked"));
    assert_one_line_error(
        &tollgate(&["keys", "revoke", &id], folder.path()),
        "no active key",
    );
    let other_org = tollgate(
        &["keys", "create", "--org", "globex", "--user", "alice"],
        folder.path(),
    );
    assert_one_line_error(&other_org, "belongs to organization `acme`");
}

#[test]
fn budgets_are_set_listed_changed_shown_and_deleted() {
    let folder = tempfile::TempDir::new().unwrap();
    assert!(
        tollgate(&["keys", "create", "--org", "acme"], folder.path())
            .status
            .success()
    );
    let created = tollgate(
        &[
            "budgets",
            "set",
            "--org",
            "acme",
            "--type",
            "monthly",
            "--amount",
            "25",
            "--hard",
            "--soft",
            "50,90",
            "--timezone",
            "Europe/Paris",
        ],
        folder.path(),
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let id = text(&created.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let listed = text(&tollgate(&["budgets", "list"], folder.path()).stdout);
    assert!(
        listed.contains(&id)
            && listed.contains("monthly")
            && listed.contains("25")
            && listed.contains("Europe/Paris"),
        "{listed}"
    );
    let changed = tollgate(
        &[
            "budgets",
            "set",
            "--id",
            &id,
            "--amount",
            "30",
            "--provider",
            "openai",
        ],
        folder.path(),
    );
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let listed = text(&tollgate(&["budgets", "list", "--org", "acme"], folder.path()).stdout);
    assert!(
        listed.contains("30") && listed.contains("provider=openai"),
        "{listed}"
    );
    let status = tollgate(&["budgets", "status", &id], folder.path());
    assert!(status.status.success(), "{}", text(&status.stderr));
    let shown = text(&status.stdout);
    assert!(
        shown.contains("limit USD")
            && shown.contains("30")
            && shown.contains("state                     ok"),
        "{shown}"
    );
    assert_one_line_error(
        &tollgate(
            &[
                "budgets", "set", "--org", "acme", "--type", "hourly", "--amount", "5",
            ],
            folder.path(),
        ),
        "--type: unknown budget type `hourly`",
    );
    assert_one_line_error(
        &tollgate(
            &[
                "budgets", "set", "--org", "acme", "--type", "daily", "--amount", "-5",
            ],
            folder.path(),
        ),
        "--amount: must not be negative",
    );
    assert_one_line_error(
        &tollgate(
            &[
                "budgets", "set", "--org", "nobody", "--type", "daily", "--amount", "5",
            ],
            folder.path(),
        ),
        "--org: unknown organization `nobody`",
    );
    assert_one_line_error(
        &tollgate(
            &[
                "budgets",
                "set",
                "--org",
                "acme",
                "--type",
                "daily",
                "--amount",
                "5",
                "--timezone",
                "Moon/Base",
            ],
            folder.path(),
        ),
        "--timezone:",
    );
    let deleted = tollgate(&["budgets", "delete", &id], folder.path());
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_one_line_error(
        &tollgate(&["budgets", "status", &id], folder.path()),
        "no budget",
    );
}

#[test]
fn users_are_exported_as_json_and_erased_only_when_confirmed() {
    let folder = tempfile::TempDir::new().unwrap();
    let created = tollgate(
        &["keys", "create", "--org", "acme", "--user", "alice"],
        folder.path(),
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let secret = text(&created.stdout).trim().to_owned();
    let exported = tollgate(&["users", "export", "alice"], folder.path());
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let document: serde_json::Value =
        serde_json::from_slice(&exported.stdout).expect("one JSON document");
    assert_eq!(document["user"]["id"], "alice");
    assert_eq!(document["user"]["org_id"], "acme");
    assert_eq!(document["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(document["usage_records"], serde_json::json!([]));
    assert!(
        !text(&exported.stdout).contains(&secret),
        "no secret in an export"
    );
    assert_one_line_error(
        &tollgate(&["users", "delete", "alice"], folder.path()),
        "run again with --yes",
    );
    let erased = tollgate(&["users", "delete", "alice", "--yes"], folder.path());
    assert!(erased.status.success(), "{}", text(&erased.stderr));
    assert!(
        text(&erased.stdout).contains("1 keys"),
        "{}",
        text(&erased.stdout)
    );
    assert_one_line_error(
        &tollgate(&["users", "export", "alice"], folder.path()),
        "no user `alice`",
    );
    let listed = text(&tollgate(&["keys", "list"], folder.path()).stdout);
    assert_eq!(
        listed.lines().count(),
        1,
        "only the header is left: {listed}"
    );
    // The CLI's changes are in the audit log, the erased user only as a
    // pseudonym.
    let mut database = String::new();
    for file in ["tollgate.db", "tollgate.db-wal"] {
        if let Ok(bytes) = std::fs::read(folder.path().join(file)) {
            database.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    for action in ["key.create", "user.export", "user.delete"] {
        assert!(database.contains(action), "{action} is audited");
    }
    assert!(database.contains("cli:"));
}

#[test]
fn orgs_and_users_are_made_and_listed() {
    let folder = tempfile::TempDir::new().unwrap();
    let created = tollgate(
        &["orgs", "create", "acme", "--name", "Acme Corp"],
        folder.path(),
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert_one_line_error(
        &tollgate(&["orgs", "create", "acme"], folder.path()),
        "organization `acme` already exists",
    );
    let listed = text(&tollgate(&["orgs", "list"], folder.path()).stdout);
    assert!(
        listed.contains("Acme Corp") && listed.contains("default"),
        "{listed}"
    );
    let user = tollgate(
        &[
            "users",
            "create",
            "bob",
            "--org",
            "acme",
            "--email",
            "bob@example.com",
            "--role",
            "org_admin",
        ],
        folder.path(),
    );
    assert!(user.status.success(), "{}", text(&user.stderr));
    assert_one_line_error(
        &tollgate(
            &["users", "create", "eve", "--org", "nowhere"],
            folder.path(),
        ),
        "no organization `nowhere`",
    );
    assert_one_line_error(
        &tollgate(&["users", "create", " ", "--org", "acme"], folder.path()),
        "id: must not be empty",
    );
    let users = text(&tollgate(&["users", "list", "--org", "acme"], folder.path()).stdout);
    assert!(
        users.contains("bob") && users.contains("org_admin") && users.contains("bob@example.com"),
        "{users}"
    );
}

#[test]
fn check_ledger_agrees_after_generate_and_names_a_tampered_rollup() {
    let folder = tempfile::TempDir::new().unwrap();
    let generated = tollgate(
        &["generate", "--records", "3000", "--days", "3"],
        folder.path(),
    );
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let checked = tollgate(&["check-ledger"], folder.path());
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let printed = text(&checked.stdout);
    assert!(printed.contains("ai_budget_spend"), "{printed}");
    assert!(printed.contains("agree"), "{printed}");
    assert!(printed.contains(" 3000 "), "{printed}");

    // One nano-dollar off in one rollup row is found.
    let database = folder.path().join("tollgate.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", database.display()))
            .await
            .unwrap();
        sqlx::query(
            "UPDATE ai_model_performance SET cost_nano_usd = cost_nano_usd + 1 \
             WHERE rowid = (SELECT MIN(rowid) FROM ai_model_performance)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });
    let tampered = tollgate(&["check-ledger"], folder.path());
    assert_one_line_error(&tampered, "disagrees with ai_model_performance");
}
