//! Linnet's sidecar: runs rollouts step by step and serves live snapshots to the filters.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod analysis;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod controller;
pub mod epoch;
pub mod event;
pub mod explain;
pub mod gate;
pub mod keys;
pub mod load;
pub mod machine;
pub mod mcp;
pub mod mcp_modern;
pub mod mcp_session;
pub mod mcp_stdio;
pub mod metrics;
pub mod named;
pub mod notify;
pub mod outbound;
pub mod report;
pub mod retention;
pub mod server;
pub mod signal;
pub mod slots;
pub mod spec;
pub mod sse;
pub mod store;
pub mod token;
pub mod ui;
