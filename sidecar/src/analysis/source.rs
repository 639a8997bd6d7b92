//! Metric sources behind one trait: what a run asks for, and what comes back.

use super::policy::{Counter, SourceKind, SourceSpec};
use super::series::Counted;
use super::window::Window;
use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What one run needs from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub rollout: String,
    /// Where each variant's traffic is counted (during a mirror step the shadow cluster
    /// stands for the canary).
    pub canary: Counted,
    pub stable: Counted,
    pub now_ms: Millis,
    /// Time since the previous run: the increment's length.
    pub increment_ms: Millis,
    /// The window lengths the guardrails judge.
    pub spans: Vec<Millis>,
    /// Zero-tolerance counters, in guardrail order.
    pub counters: Vec<Counter>,
}

/// What a run observed: the traffic since the previous run (for counters and evidence,
/// which must not count a request twice) and one window per length the guardrails use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub increment: Window,
    pub windows: Vec<Window>,
    /// Which sources were left out of this run and why, when some answered and some did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<Observed, String>> + Send + 'a>>;

/// A place the numbers come from. `Err` says why there are none (down, garbage); a source
/// answers NaN as NaN, and the judge turns both into NoData.
pub trait Source: Send + Sync {
    fn observe<'a>(&'a self, query: &'a Query) -> Answer<'a>;
}

/// Where a source keeps what must outlive the process (the envoy source: each admin's last
/// scrape, so the first run after a restart has a window). Best effort: a source that cannot
/// recall or keep something judges as it would without it.
pub trait Recall: Send + Sync {
    fn recall(&self, key: &str) -> Option<(String, Millis)>;
    fn keep(&self, key: &str, value: &str, at_ms: Millis);
}

// === impl Observed ===

impl Observed {
    /// The window of length `span_ms`, if the source returned one.
    pub fn window(&self, span_ms: Millis) -> Option<&Window> {
        self.windows.iter().find(|w| w.span_ms == span_ms)
    }
}

/// Builds the source a spec names.
pub fn build(
    spec: &SourceSpec,
    timeout: std::time::Duration,
    recall: Option<Arc<dyn Recall>>,
) -> Result<Arc<dyn Source>, String> {
    match spec.kind()? {
        SourceKind::Envoy(e) => Ok(Arc::new(super::envoy::EnvoySource::new(
            &e.admin, timeout, recall,
        )?)),
        SourceKind::Prometheus(p) => Ok(Arc::new(super::prometheus::PrometheusSource::new(
            &p.url,
            p.queries.clone().unwrap_or_default(),
            timeout,
        )?)),
    }
}
