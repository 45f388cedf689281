//! Loading settings from arbitrary TOML, as `tollgate serve --config FILE`
//! does, but with no environment variables (`Sources` is filled by hand, the
//! process environment is never read): `Config::load`, then everything the
//! app derives from a loaded config before it takes traffic.
//!
//! Input: the config file's text, optionally followed by a 0xFF byte (never
//! part of UTF-8 text) and `setting.path=value` lines, which are passed as
//! command-line overrides (`--set`-style flags go through the same code).
//!
//! Checked: nothing panics — a bad file or value is a `ConfigError` — and a
//! loaded config yields its settings, prices and record checks without
//! panicking.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use tollgate::app;
use tollgate::config::{Config, Sources};
use tollgate::http::server::EdgeLimits;
use tollgate::recorder::{RecorderSettings, price_event};
use tollgate::usage::{
    ExtraUsage, ImageBatch, MAX_TOKENS, Provider, RecordStatus, TaskType, TokenCounts, UsageEvent,
};

fuzz_target!(|data: &[u8]| {
    let (text, overrides) = match data.iter().position(|byte| *byte == 0xFF) {
        Some(split) => (&data[..split], &data[split + 1..]),
        None => (data, &[][..]),
    };
    let path = config_file();
    write_file(path, text);
    let overrides = String::from_utf8_lossy(overrides)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(setting, value)| (setting.to_owned(), value.to_owned()))
        .collect();
    let sources = Sources {
        file: Some(path.clone()),
        environment: Vec::new(),
        overrides,
    };
    let loaded = Config::load(&sources);
    let _ = std::fs::remove_file(path);
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(config.recorder.batch_size >= 1);
    assert!(config.gateway.max_attempts >= 1);

    let recorder = RecorderSettings::from_config(&config);
    let _ = app::delivery_settings(&config);
    let _ = app::report_settings(&config);
    let _ = app::evaluator_settings(&config);
    let _ = EdgeLimits::from_config(&config.server);
    let _ = format!("{config:?}");

    // What the recorder does with every record under these settings.
    let now = now();
    let record = largest_event(now, Provider::OpenAi, "gpt-4o");
    let _ = record.validate(now, recorder.max_future_skew);

    let pricing = match app::pricing_from_config(&config) {
        Ok(pricing) => pricing,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    for key in config.pricing.models.keys() {
        let Some((provider, model)) = key.split_once('/') else {
            continue;
        };
        let Ok(provider) = provider.parse::<Provider>() else {
            continue;
        };
        let _ = price_event(&pricing, largest_event(now, provider, model));
    }
});

/// A record as large as validation allows, so configured prices are tried
/// against the largest counts.
fn largest_event(now: chrono::DateTime<Utc>, provider: Provider, model: &str) -> UsageEvent {
    UsageEvent {
        request_id: uuid::Uuid::nil(),
        parent_request_id: None,
        created_at: now,
        org_id: "default".to_owned(),
        user_id: None,
        api_key_id: None,
        provider,
        model: model.to_owned(),
        task_type: TaskType::Chat,
        tokens: TokenCounts {
            input: MAX_TOKENS,
            output: MAX_TOKENS,
            cached_input: MAX_TOKENS / 2,
            reasoning: MAX_TOKENS / 2,
        },
        extra: ExtraUsage {
            input_image_tokens: MAX_TOKENS / 4,
            output_image_tokens: MAX_TOKENS / 4,
            input_audio_tokens: MAX_TOKENS / 4,
            output_audio_tokens: MAX_TOKENS / 4,
            images: Some(ImageBatch {
                count: 10_000,
                size: "1024x1024".to_owned(),
                quality: "hd".to_owned(),
            }),
            audio_milliseconds: 30 * 24 * 3_600 * 1_000,
        },
        reported_cost: None,
        latency_ms: 1_000,
        time_to_first_token_ms: None,
        status_code: Some(200),
        status: RecordStatus::Ok,
        error_type: None,
        stream: false,
        provider_request_id: None,
        metadata: serde_json::Map::new(),
    }
}

/// One file per fuzzing process, written for each input and removed once
/// read. In memory where there is a tmpfs; `TMPDIR` is not read, so the
/// process environment plays no part.
fn config_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let folder = if shm.is_dir() {
            shm
        } else {
            std::path::Path::new("/tmp")
        };
        folder.join(format!("tollgate-fuzz-config-{}.toml", std::process::id()))
    })
}

fn write_file(path: &PathBuf, bytes: &[u8]) {
    let written = std::fs::File::create(path).and_then(|mut file| file.write_all(bytes));
    if let Err(error) = written {
        panic!("cannot write {}: {error}", path.display());
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
        .single()
        .unwrap_or_default()
}
