//! The proxy use case: key → route → provider → meter → record.

pub mod attempt;
pub mod body;
pub mod estimate;
pub mod meter;
pub mod proxy;
pub mod routing;
pub mod sse;
pub mod stream;

pub use attempt::Attribution;
pub use proxy::{ClientRequest, Gateway, GatewayError, Reply};
