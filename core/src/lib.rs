//! Linnet's rules, with no I/O and no proxy-wasm: the plugin configuration, its compiled
//! snapshot, sticky bucketing and the per-request decision. Built for wasm32 and native; the
//! filter and the sidecar both decide through this crate.
#![forbid(unsafe_code)]

pub mod config;
pub mod decide;
pub mod metrics;
pub mod murmur3;
pub mod poll;
pub mod snapshot;
pub mod stamp;
pub mod weight;

pub use config::{ConfigError, PluginConfig, SnapshotDoc};
pub use decide::{bucket, Decision, MintedCookie, Reason, Request, Variant};
pub use snapshot::{Rollout, Snapshot};
pub use stamp::{Epoch, Stamp, Standing};
pub use weight::Bp;
