//! Tollgate: a self-hosted AI usage monitor and OpenAI-compatible gateway.
//! Modules in reading order: vocabulary, domain logic, storage, the recorder,
//! the HTTP surface, then assembly.

pub mod alerts;
pub mod analytics;
pub mod app;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod cli;
pub mod config;
pub mod credits;
pub mod export;
pub mod fake_upstream;
pub mod gateway;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod listener;
pub mod money;
pub mod pricing;
pub mod providers;
pub mod query;
pub mod recorder;
pub mod reports;
pub mod retention;
pub mod rollup;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod usage;
pub mod usage_metrics;
pub mod webhooks;
