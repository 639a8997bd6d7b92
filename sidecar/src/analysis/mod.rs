//! Analysis: judges the canary against guardrails from real metrics, every interval, and
//! turns the checks into promote, hold, pause or roll back.

pub mod envoy;
pub mod judge;
pub mod prometheus;
pub mod runner;
pub mod sim;
pub mod source;
pub mod spec;
pub mod step;
pub mod text;
pub mod window;

pub use judge::{Check, Decision, Memory, Observed, Verdict};
pub use spec::{Analysis, AnalysisSpec};
