//! Faults of the token endpoint and of the network, bad input, timing and cancellation: a
//! matrix showing that every request gets a valid token or a typed error, that no error shows a
//! secret, and that the refresher survives every fault and recovers as soon as the endpoint
//! does.
//!
//! - `endpoint`: one table row per answer of the token endpoint (in memory, paused clock).
//! - `network`: refused, reset, silent and misaddressed connections (real sockets on
//!   127.0.0.1, real clock, short timeouts).
//! - `timing`: outages at start, outages longer than a token's lifetime, a flapping endpoint
//!   under 500 requests per second (paused clock).
//! - `cancellation`: requests dropped while they wait for a token (paused clock).
//!
//! Run with `--nocapture` to see each row's observed outcome.

#[path = "../common/mod.rs"]
mod common;

mod cancellation;
mod endpoint;
mod network;
mod support;
mod timing;
