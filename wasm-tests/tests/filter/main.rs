//! Scripted host conversations with the release `.wasm`, one module per feature. They share
//! one test binary so the filter is compiled once.
// clippy.toml allows these in #[test] functions only; test helpers fail the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anonymous;
mod bad_input;
mod cohorts_override;
mod config;
mod config_push;
mod epochs;
mod exports;
mod host;
mod marking;
mod metrics;
mod mirror;
mod routing;
mod spoofing;
mod support;
