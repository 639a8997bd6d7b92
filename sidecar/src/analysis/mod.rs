//! Analysis: judges the canary against guardrails from real metrics, every interval, and
//! turns the checks into a decision: pass (a step may advance), hold, pause, resume or roll
//! back.

pub mod envoy;
pub mod exposition;
pub mod judge;
pub mod policy;
pub mod prometheus;
pub mod runner;
pub mod series;
pub mod sim;
pub mod source;
pub mod step;
pub mod window;

pub use judge::{Action, Check, Memory, Ruling, Verdict};
pub use policy::{Analysis, AnalysisSpec};
pub use source::Observed;
