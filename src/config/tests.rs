use std::io::Write;

use super::*;

fn with_file(text: &str) -> (tempfile::NamedTempFile, Sources) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let sources = Sources {
        file: Some(file.path().to_owned()),
        ..Sources::default()
    };
    (file, sources)
}

#[test]
fn the_built_in_defaults_match_the_documented_ones() {
    let config = Config::defaults().unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.database.url.expose(), "sqlite://tollgate.db");
    assert_eq!(
        config.providers.openai.base_url,
        "https://api.openai.com/v1"
    );
    assert_eq!(
        config.providers.openrouter.base_url,
        "https://openrouter.ai/api/v1"
    );
    assert_eq!(config.providers.local.base_url, "http://127.0.0.1:11434/v1");
    assert!(config.server.admin_token.is_none());
    assert_eq!(config.server.timezone, chrono_tz::UTC);
}

#[test]
fn the_file_then_the_environment_then_flags_override_the_defaults() {
    let (_file, mut sources) = with_file(
        "[server]\nlisten = \"127.0.0.1:9000\"\ntimezone = \"Europe/Berlin\"\n[recorder]\nbatch_size = 50\n",
    );
    sources.environment = vec![
        ("TOLLGATE_LISTEN".to_owned(), "127.0.0.1:9100".to_owned()),
        (
            "DATABASE_URL".to_owned(),
            "postgres://db/tollgate".to_owned(),
        ),
        ("OPENAI_API_KEY".to_owned(), "sk-test-123".to_owned()),
    ];
    sources.overrides = vec![("server.listen".to_owned(), "127.0.0.1:9200".to_owned())];
    let config = Config::load(&sources).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9200");
    assert_eq!(config.server.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(config.recorder.batch_size, 50);
    assert_eq!(
        config.recorder.flush_interval_ms, 100,
        "untouched defaults survive a partial table"
    );
    assert_eq!(config.database.url.expose(), "postgres://db/tollgate");
    assert_eq!(
        config.providers.openai.api_key.as_ref().map(Secret::expose),
        Some("sk-test-123")
    );
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    for (text, named) in [
        ("colour = 1\n", "colour"),
        ("[recorder]\nbatch_sise = 3\n", "recorder.batch_sise"),
        (
            "[providers.anthropic]\nbase_url = \"https://x\"\n",
            "anthropic",
        ),
        (
            "[pricing.models.\"local/x\"]\ninput_mtk = \"1\"\n",
            "input_mtk",
        ),
    ] {
        let (_file, sources) = with_file(text);
        let error = Config::load(&sources).unwrap_err().to_string();
        assert!(error.contains(named), "{text}: {error}");
    }
}

#[test]
fn bad_values_are_errors_that_name_the_setting() {
    for (text, named) in [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\ntimezone = \"Mars/Olympus\"\n", "server.timezone"),
        ("[recorder]\nbatch_size = 0\n", "recorder.batch_size"),
        (
            "[providers.local]\nbase_url = \"ftp://x\"\n",
            "providers.local.base_url",
        ),
        ("[pricing]\nunpriced = \"maybe\"\n", "pricing.unpriced"),
        (
            "[dashboard]\nsession_hours = 0\n",
            "dashboard.session_hours",
        ),
        (
            "[dashboard]\nsession_hours = 100000\n",
            "dashboard.session_hours",
        ),
        (
            "[dashboard]\nsession_secret = \"short\"\n",
            "dashboard.session_secret",
        ),
        // Timers this long overflow tokio's `Instant + Duration` after a tick.
        (
            "[alerts]\nevaluate_interval_seconds = 9223372036854775807\n",
            "alerts.evaluate_interval_seconds",
        ),
        (
            "[recorder]\njournal_sync_interval_ms = 99999999999999\n",
            "recorder.journal_sync_interval_ms",
        ),
        (
            "[recorder]\ndurability = \"sometimes\"\n",
            "recorder.durability",
        ),
        // Found while writing the `config` fuzz target: these panicked once loaded
        // (chrono's range) or made every record "in the future".
        (
            "[ingest]\nmax_future_skew_seconds = 9223372036854775807\n",
            "ingest.max_future_skew_seconds",
        ),
        (
            "[ingest]\nmax_future_skew_seconds = 9000000000000\n",
            "ingest.max_future_skew_seconds",
        ),
        (
            "[ingest]\nmax_future_skew_seconds = -300\n",
            "ingest.max_future_skew_seconds",
        ),
    ] {
        let (_file, sources) = with_file(text);
        let error = Config::load(&sources).unwrap_err().to_string();
        assert!(error.contains(named), "{text}: {error}");
    }
}

#[test]
fn a_file_that_is_not_toml_is_an_error_with_its_line() {
    let (_file, sources) = with_file("[server]\nlisten = \n");
    let error = Config::load(&sources).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let sources = Sources {
        environment: vec![
            (
                "TOLLGATE_ADMIN_TOKEN".to_owned(),
                "admin-secret-value".to_owned(),
            ),
            (
                "OPENROUTER_API_KEY".to_owned(),
                "sk-or-secret-value".to_owned(),
            ),
            (
                "DATABASE_URL".to_owned(),
                "postgres://app:db-secret-value@db/x".to_owned(),
            ),
        ],
        ..Sources::default()
    };
    let config = Config::load(&sources).unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("secret-value"), "{printed}");
    assert!(printed.contains("Secret(redacted)"));
}
