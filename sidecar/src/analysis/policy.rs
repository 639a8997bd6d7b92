//! The analysis policy: the `analysis` section of a rollout spec (where the numbers come from,
//! how often, and the guardrails that judge them), and its validation into an [`Analysis`].
//!
//! Every error names its field (`analysis.guardrails[1].latency.max_ms`), like the rest of the
//! spec. Percentages are written as percent and kept as fractions.

use super::series::Selector;
use crate::clock::{millis, Millis};
use crate::spec::parse_duration;
use linnet_core::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The section as the user wrote it; stored verbatim inside the rollout spec.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// How often the guardrails are checked. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Where the numbers come from. Default: the Envoy admin at 127.0.0.1:9901.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// Consecutive passing checks a step needs, after its pause, to advance. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<u32>,
    /// Consecutive checks with a failed warning guardrail that roll back. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// Consecutive checks without data that pause the rollout. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodata_limit: Option<u32>,
    /// Requests a variant needs in a window before a guardrail judges it. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// The service's availability objective in percent (e.g. 99.9), for burn-rate guardrails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<f64>,
    pub guardrails: Vec<GuardrailSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy: Option<EnvoySourceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSourceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvoySourceSpec {
    /// Admin addresses (`127.0.0.1:9901` or `http://host:port`) of every Envoy that routes
    /// this rollout; their counters are added up.
    pub admin: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusSourceSpec {
    /// `http://host:port` of the Prometheus HTTP API.
    pub url: String,
    /// Overrides of the query templates; see [`Queries`] for the placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<Queries>,
}

/// The one source a [`SourceSpec`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind<'a> {
    Envoy(&'a EnvoySourceSpec),
    Prometheus(&'a PrometheusSourceSpec),
}

/// PromQL templates. Placeholders: `{rollout}`, `{variant}` (`canary` or `stable`),
/// `{cluster}` (the shadow cluster) and `{window}` (e.g. `30s`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Queries {
    #[serde(default = "q::requests")]
    pub requests: String,
    #[serde(default = "q::errors")]
    pub errors: String,
    /// Must return one series per `le` bucket (cumulative counts).
    #[serde(default = "q::latency")]
    pub latency: String,
    /// A cluster's requests, with `{cluster}`: a variant's cluster when the spec names
    /// `clusters`, and the shadow cluster during a mirror step.
    #[serde(default = "q::cluster_requests")]
    pub cluster_requests: String,
    #[serde(default = "q::cluster_errors")]
    pub cluster_errors: String,
    #[serde(default = "q::cluster_latency")]
    pub cluster_latency: String,
}

/// One guardrail: exactly one of the kinds, with a severity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardrailSpec {
    /// Shown in checks and decisions. Default: from the kind (`error-rate`, `p99`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `critical` (default: a failure rolls back at once) or `warning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// The window judged. Default: the analysis interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<BurnRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_tolerance: Option<ZeroToleranceSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Critical,
    Warning,
}

/// The canary's share of 5xx responses must stay at or below `max` percent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateSpec {
    pub max: f64,
}

/// The canary's latency quantile (`p50`, `p95`, `p99`, or `p` with any number) must stay at
/// or below `max_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    pub quantile: String,
    pub max_ms: f64,
}

/// The canary's error rate against stable's, by a sequential probability ratio test: it fails
/// once the evidence that the canary errs `ratio` times as often as stable reaches
/// `1/alpha` to 1.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareSpec {
    /// The error-rate ratio to detect. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The bound on the chance of rolling back a canary as good as stable. Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

/// Error-budget burn against `analysis.slo`, each pair failing when both its windows burn
/// faster than `factor`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BurnRateSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<BurnWindowSpec>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BurnWindowSpec {
    pub long: String,
    pub short: String,
    pub factor: f64,
}

/// Any increase of the counter rolls back at once. `metric` is a series selector
/// (`name` or `name{label="value",...}`) that both sources read; `query` is PromQL for the
/// `prometheus` source, failing when its value is above 0.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZeroToleranceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// The validated analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub interval_ms: Millis,
    pub source: SourceSpec,
    pub passes: u32,
    pub failure_limit: u32,
    pub nodata_limit: u32,
    pub min_requests: f64,
    pub guardrails: Vec<Guardrail>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub name: String,
    pub severity: Severity,
    pub window_ms: Millis,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Fraction of requests.
    ErrorRate {
        max: f64,
    },
    /// `q` in 0..1.
    Latency {
        q: f64,
        max_ms: f64,
    },
    Compare {
        ratio: f64,
        alpha: f64,
    },
    BurnRate {
        budget: f64,
        windows: Vec<BurnWindow>,
    },
    ZeroTolerance(Counter),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurnWindow {
    pub long_ms: Millis,
    pub short_ms: Millis,
    pub factor: f64,
}

/// A counter a source reads for a zero-tolerance guardrail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Counter {
    pub metric: Option<Selector>,
    pub query: Option<String>,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Scaled from the SRE workbook's 1h/5m at 14.4 and 6h/30m at 6 to a rollout's minutes.
pub const DEFAULT_BURN_WINDOWS: [(Duration, Duration, f64); 2] = [
    (Duration::from_secs(300), Duration::from_secs(60), 14.4),
    (Duration::from_secs(1800), Duration::from_secs(300), 6.0),
];

/// The default queries read the series the envoy source reads (see [`TrafficSeries`]).
mod q {
    use crate::analysis::series::{increase, Selector, TrafficSeries, LE};

    fn variant() -> TrafficSeries {
        TrafficSeries::variant("{rollout}", "{variant}")
    }
    fn cluster() -> TrafficSeries {
        TrafficSeries::cluster("{cluster}")
    }
    fn by_le(buckets: &Selector) -> String {
        format!("sum by ({LE}) (increase({buckets}[{{window}}]))")
    }

    pub fn requests() -> String {
        increase(&variant().requests, "{window}")
    }
    pub fn errors() -> String {
        increase(&variant().errors, "{window}")
    }
    pub fn latency() -> String {
        by_le(&variant().buckets)
    }
    pub fn cluster_requests() -> String {
        increase(&cluster().requests, "{window}")
    }
    pub fn cluster_errors() -> String {
        increase(&cluster().errors, "{window}")
    }
    pub fn cluster_latency() -> String {
        by_le(&cluster().buckets)
    }
}

// === impl Analysis ===

impl Analysis {
    /// What a reader should know before trusting a valid spec: zero-tolerance guardrails that
    /// a client could trip on its own, or that do not look at the canary at all.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.guardrails {
            let Kind::ZeroTolerance(c) = &g.kind else {
                continue;
            };
            let (text, names_canary) = match (&c.metric, &c.query) {
                (Some(m), _) => (
                    m.to_string(),
                    m.labels.iter().any(|(_, v)| v.contains("canary")),
                ),
                (None, Some(q)) => (q.clone(), q.contains("canary")),
                (None, None) => continue,
            };
            let moved = linnet_core::metrics::CLIENT_MOVED
                .iter()
                .find(|(name, _)| text.contains(name));
            if let Some((name, how)) = moved {
                out.push(format!(
                    "guardrail {:?} reads {name}, which {how}: a client alone could roll the release back; watch a series the canary itself emits",
                    g.name
                ));
            } else if !names_canary {
                out.push(format!(
                    "guardrail {:?} reads {text}, which names no canary label or cluster (no label value containing \"canary\"): stable or another service could roll this canary back",
                    g.name
                ));
            }
        }
        out
    }
}

// === impl SourceSpec ===

impl SourceSpec {
    /// The source named: exactly one of `envoy` or `prometheus`.
    pub fn kind(&self) -> Result<SourceKind<'_>, &'static str> {
        match (&self.envoy, &self.prometheus) {
            (Some(e), None) => Ok(SourceKind::Envoy(e)),
            (None, Some(p)) => Ok(SourceKind::Prometheus(p)),
            _ => Err("give exactly one of `envoy` or `prometheus`"),
        }
    }

    /// The source named, once its addresses are valid; `at` is where the section is.
    fn validate(&self, at: &str) -> Result<SourceKind<'_>, ConfigError> {
        let kind = self.kind().map_err(|m| ConfigError::new(at, m))?;
        match kind {
            SourceKind::Envoy(e) => {
                if e.admin.is_empty() {
                    return Err(ConfigError::new(
                        format!("{at}.envoy.admin"),
                        "list at least one admin address",
                    ));
                }
                for (i, a) in e.admin.iter().enumerate() {
                    admin_url(a)
                        .map_err(|m| ConfigError::new(format!("{at}.envoy.admin[{i}]"), m))?;
                }
            }
            SourceKind::Prometheus(p) => {
                http_url(&p.url)
                    .map_err(|m| ConfigError::new(format!("{at}.prometheus.url"), m))?;
            }
        }
        Ok(kind)
    }
}

// === impl Queries ===

impl Default for Queries {
    fn default() -> Self {
        Queries {
            requests: q::requests(),
            errors: q::errors(),
            latency: q::latency(),
            cluster_requests: q::cluster_requests(),
            cluster_errors: q::cluster_errors(),
            cluster_latency: q::cluster_latency(),
        }
    }
}

// === impl Severity ===

impl Severity {
    pub const ALL: [Severity; 2] = [Severity::Critical, Severity::Warning];

    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

crate::named::serde_by_name!(Severity);

// === impl Kind ===

impl Kind {
    // Each kind's word: its section in a guardrail spec, and the `kind` of its checks.
    pub const ERROR_RATE: &'static str = "error_rate";
    pub const LATENCY: &'static str = "latency";
    pub const COMPARE: &'static str = "compare";
    pub const BURN_RATE: &'static str = "burn_rate";
    pub const ZERO_TOLERANCE: &'static str = "zero_tolerance";

    pub const fn as_str(&self) -> &'static str {
        match self {
            Kind::ErrorRate { .. } => Kind::ERROR_RATE,
            Kind::Latency { .. } => Kind::LATENCY,
            Kind::Compare { .. } => Kind::COMPARE,
            Kind::BurnRate { .. } => Kind::BURN_RATE,
            Kind::ZeroTolerance(_) => Kind::ZERO_TOLERANCE,
        }
    }
}

// === impl AnalysisSpec ===

impl AnalysisSpec {
    /// Validates every field, naming the first bad one.
    pub fn validate(&self) -> Result<Analysis, ConfigError> {
        let interval = match &self.interval {
            None => DEFAULT_INTERVAL,
            Some(s) => positive("analysis.interval", s)?,
        };
        let interval_ms = millis(interval);
        let source = self.source.clone().unwrap_or_else(|| SourceSpec {
            envoy: Some(EnvoySourceSpec {
                admin: vec![DEFAULT_ADMIN.into()],
            }),
            prometheus: None,
        });
        let kind = source.validate("analysis.source")?;
        let at_least_one = |field: &str, v: Option<u32>, default: u32| match v {
            Some(0) => Err(ConfigError::new(
                format!("analysis.{field}"),
                "must be at least 1",
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let min_requests = match self.min_requests {
            Some(0) => {
                return Err(ConfigError::new(
                    "analysis.min_requests",
                    "must be at least 1",
                ))
            }
            Some(n) => n as f64,
            None => 100.0,
        };
        let budget = match self.slo {
            None => None,
            Some(o) if o.is_finite() && o > 0.0 && o < 100.0 => Some(1.0 - o / 100.0),
            Some(o) => {
                return Err(ConfigError::new(
                    "analysis.slo",
                    format!("{o} is not an availability objective: give a percent above 0 and below 100, e.g. 99.9"),
                ))
            }
        };
        if self.guardrails.is_empty() {
            return Err(ConfigError::new(
                "analysis.guardrails",
                "list at least one guardrail",
            ));
        }
        let mut guardrails = Vec::with_capacity(self.guardrails.len());
        for (i, g) in self.guardrails.iter().enumerate() {
            let g = g.validate(&format!("analysis.guardrails[{i}]"), interval_ms, budget)?;
            if guardrails.iter().any(|o: &Guardrail| o.name == g.name) {
                return Err(ConfigError::new(
                    format!("analysis.guardrails[{i}].name"),
                    format!(
                        "{:?} is used twice; give each guardrail its own name",
                        g.name
                    ),
                ));
            }
            if let SourceKind::Envoy(_) = kind {
                if let Kind::ZeroTolerance(Counter { metric: None, .. }) = g.kind {
                    return Err(ConfigError::new(
                        format!("analysis.guardrails[{i}].zero_tolerance.query"),
                        "only the `prometheus` source runs PromQL; with `envoy`, name the counter in `metric`",
                    ));
                }
            }
            guardrails.push(g);
        }
        Ok(Analysis {
            interval_ms,
            source,
            passes: at_least_one("passes", self.passes, 2)?,
            failure_limit: at_least_one("failure_limit", self.failure_limit, 3)?,
            nodata_limit: at_least_one("nodata_limit", self.nodata_limit, 3)?,
            min_requests,
            guardrails,
        })
    }
}

// === impl GuardrailSpec ===

impl GuardrailSpec {
    fn validate(
        &self,
        at: &str,
        interval_ms: Millis,
        budget: Option<f64>,
    ) -> Result<Guardrail, ConfigError> {
        let f = |name: &str| format!("{at}.{name}");
        let given: Vec<&dyn KindSpec> = [
            self.error_rate.as_ref().map(|k| k as &dyn KindSpec),
            self.latency.as_ref().map(|k| k as &dyn KindSpec),
            self.compare.as_ref().map(|k| k as &dyn KindSpec),
            self.burn_rate.as_ref().map(|k| k as &dyn KindSpec),
            self.zero_tolerance.as_ref().map(|k| k as &dyn KindSpec),
        ]
        .into_iter()
        .flatten()
        .collect();
        let [given] = given.as_slice() else {
            return Err(ConfigError::new(
                at,
                format!(
                    "give exactly one of `{}`, `{}`, `{}`, `{}` or `{}`",
                    Kind::ERROR_RATE,
                    Kind::LATENCY,
                    Kind::COMPARE,
                    Kind::BURN_RATE,
                    Kind::ZERO_TOLERANCE
                ),
            ));
        };
        let window_ms = match &self.window {
            None => interval_ms,
            Some(w) => millis(positive(&f("window"), w)?),
        };
        let ValidKind { kind, default_name } = given.validate(&f(given.field()), budget)?;
        let name = match &self.name {
            Some(n) if n.trim().is_empty() || n.len() > 64 => {
                return Err(ConfigError::new(f("name"), "must be 1 to 64 characters"))
            }
            Some(n) => n.clone(),
            None => default_name,
        };
        Ok(Guardrail {
            name,
            severity: self.severity.unwrap_or(Severity::Critical),
            window_ms,
            kind,
        })
    }
}

/// One guardrail kind's section, validated on its own.
trait KindSpec {
    /// The section's field in a guardrail (the kind's word).
    fn field(&self) -> &'static str;
    /// Validates the section at `at` (`analysis.guardrails[0].latency`); `budget` is the
    /// error budget of `analysis.slo`, when given.
    fn validate(&self, at: &str, budget: Option<f64>) -> Result<ValidKind, ConfigError>;
}

/// A validated kind, and the name a guardrail of it has unless it gives one.
struct ValidKind {
    kind: Kind,
    default_name: String,
}

// === impl KindSpec for ErrorRateSpec ===

impl KindSpec for ErrorRateSpec {
    fn field(&self) -> &'static str {
        Kind::ERROR_RATE
    }

    fn validate(&self, at: &str, _: Option<f64>) -> Result<ValidKind, ConfigError> {
        let max = fraction(&format!("{at}.max"), self.max)?;
        Ok(ValidKind {
            kind: Kind::ErrorRate { max },
            default_name: "error-rate".to_owned(),
        })
    }
}

// === impl KindSpec for LatencySpec ===

impl KindSpec for LatencySpec {
    fn field(&self) -> &'static str {
        Kind::LATENCY
    }

    fn validate(&self, at: &str, _: Option<f64>) -> Result<ValidKind, ConfigError> {
        let q =
            quantile(&self.quantile).map_err(|m| ConfigError::new(format!("{at}.quantile"), m))?;
        if !(self.max_ms.is_finite() && self.max_ms > 0.0) {
            return Err(ConfigError::new(
                format!("{at}.max_ms"),
                format!(
                    "{} is not a latency: give milliseconds above 0",
                    self.max_ms
                ),
            ));
        }
        Ok(ValidKind {
            kind: Kind::Latency {
                q,
                max_ms: self.max_ms,
            },
            default_name: format!(
                "p{}-latency",
                self.quantile.trim().trim_start_matches(['p', 'P'])
            ),
        })
    }
}

// === impl KindSpec for CompareSpec ===

impl KindSpec for CompareSpec {
    fn field(&self) -> &'static str {
        Kind::COMPARE
    }

    fn validate(&self, at: &str, _: Option<f64>) -> Result<ValidKind, ConfigError> {
        let ratio = self.ratio.unwrap_or(2.0);
        if !(ratio.is_finite() && ratio > 1.0 && ratio <= 100.0) {
            return Err(ConfigError::new(
                format!("{at}.ratio"),
                format!("{ratio} cannot be detected: give an error-rate ratio above 1 (e.g. 2: twice stable's errors), at most 100"),
            ));
        }
        let alpha = self.alpha.unwrap_or(0.01);
        if !(alpha.is_finite() && alpha > 0.0 && alpha < 0.5) {
            return Err(ConfigError::new(
                format!("{at}.alpha"),
                format!("{alpha} is not a false-rollback bound: give a probability above 0 and below 0.5, e.g. 0.01"),
            ));
        }
        Ok(ValidKind {
            kind: Kind::Compare { ratio, alpha },
            default_name: "vs-stable".to_owned(),
        })
    }
}

// === impl KindSpec for BurnRateSpec ===

impl KindSpec for BurnRateSpec {
    fn field(&self) -> &'static str {
        Kind::BURN_RATE
    }

    fn validate(&self, at: &str, budget: Option<f64>) -> Result<ValidKind, ConfigError> {
        let Some(budget) = budget else {
            return Err(ConfigError::new(
                at,
                "needs `analysis.slo`, the availability objective whose budget it burns",
            ));
        };
        let windows = match &self.windows {
            None => DEFAULT_BURN_WINDOWS
                .iter()
                .map(|(l, s, factor)| BurnWindow {
                    long_ms: millis(*l),
                    short_ms: millis(*s),
                    factor: *factor,
                })
                .collect(),
            Some(ws) if ws.is_empty() => {
                return Err(ConfigError::new(
                    format!("{at}.windows"),
                    "list at least one window pair",
                ))
            }
            Some(ws) => ws
                .iter()
                .enumerate()
                .map(|(j, w)| w.validate(&format!("{at}.windows[{j}]")))
                .collect::<Result<_, _>>()?,
        };
        Ok(ValidKind {
            kind: Kind::BurnRate { budget, windows },
            default_name: "burn-rate".to_owned(),
        })
    }
}

// === impl BurnWindowSpec ===

impl BurnWindowSpec {
    fn validate(&self, at: &str) -> Result<BurnWindow, ConfigError> {
        let f = |name: &str| format!("{at}.{name}");
        let long_ms = millis(positive(&f("long"), &self.long)?);
        let short_ms = millis(positive(&f("short"), &self.short)?);
        if short_ms > long_ms {
            return Err(ConfigError::new(
                f("short"),
                "must not be longer than `long`",
            ));
        }
        if !(self.factor.is_finite() && self.factor > 0.0) {
            return Err(ConfigError::new(
                f("factor"),
                format!(
                    "{} is not a burn rate: give a number above 0, e.g. 14.4",
                    self.factor
                ),
            ));
        }
        Ok(BurnWindow {
            long_ms,
            short_ms,
            factor: self.factor,
        })
    }
}

// === impl KindSpec for ZeroToleranceSpec ===

impl KindSpec for ZeroToleranceSpec {
    fn field(&self) -> &'static str {
        Kind::ZERO_TOLERANCE
    }

    fn validate(&self, at: &str, _: Option<f64>) -> Result<ValidKind, ConfigError> {
        let metric = match &self.metric {
            None => None,
            Some(m) => {
                Some(Selector::parse(m).map_err(|m| ConfigError::new(format!("{at}.metric"), m))?)
            }
        };
        if metric.is_none() == self.query.is_none() {
            return Err(ConfigError::new(
                at,
                "give exactly one of `metric` (a series selector) or `query` (PromQL)",
            ));
        }
        if self.query.as_deref().is_some_and(|q| q.trim().is_empty()) {
            return Err(ConfigError::new(format!("{at}.query"), "is empty"));
        }
        let default_name = match &metric {
            Some(m) => m.name.clone(),
            None => "zero-tolerance".to_owned(),
        };
        Ok(ValidKind {
            kind: Kind::ZeroTolerance(Counter {
                metric,
                query: self.query.clone(),
            }),
            default_name,
        })
    }
}

/// `127.0.0.1:9901` or `http://127.0.0.1:9901` as a base URL.
pub fn admin_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    http_url(&url)?;
    Ok(url)
}

fn http_url(s: &str) -> Result<(), String> {
    let uri: hyper::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("{s:?}: give http://host:port"));
    }
    Ok(())
}

/// `p99` → 0.99, `p99.9` → 0.999, `p50` → 0.5.
fn quantile(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let num = t
        .strip_prefix(['p', 'P'])
        .ok_or_else(|| format!("{s:?} is not a quantile: write p50, p95, p99 or p99.9"))?;
    match num.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 100.0 => Ok(v / 100.0),
        _ => Err(format!(
            "{s:?} is not a quantile: write p50, p95, p99 or p99.9"
        )),
    }
}

fn fraction(field: &str, percent: f64) -> Result<f64, ConfigError> {
    if percent.is_finite() && (0.0..=100.0).contains(&percent) {
        Ok(percent / 100.0)
    } else {
        Err(ConfigError::new(
            field,
            format!("{percent} is outside 0..=100 (percent)"),
        ))
    }
}

fn positive(field: &str, s: &str) -> Result<Duration, ConfigError> {
    match parse_duration(s) {
        Ok(d) if d >= Duration::from_millis(100) => Ok(d),
        Ok(_) => Err(ConfigError::new(field, "must be at least 100ms")),
        Err(m) => Err(ConfigError::new(field, m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Analysis, ConfigError> {
        let spec: AnalysisSpec = serde_saphyr::from_str(yaml).unwrap();
        spec.validate()
    }

    #[test]
    fn guardrails_a_client_could_trip_or_that_miss_the_canary_are_warned_about() {
        let warns = |metric: &str| {
            let yaml = format!("{{guardrails: [{{zero_tolerance: {{metric: '{metric}'}}}}]}}");
            check(&yaml).unwrap().warnings()
        };
        let w = warns(r#"linnet_override_rejected_total{rollout="checkout"}"#);
        assert!(
            w.len() == 1 && w[0].contains("wrong override token"),
            "{w:?}"
        );
        let w = warns("linnet_stripped_headers_total");
        assert!(
            w.len() == 1 && w[0].contains("Linnet's own headers"),
            "{w:?}"
        );
        let w = warns(r#"app_errors_total{service="checkout"}"#);
        assert!(w.len() == 1 && w[0].contains("names no canary"), "{w:?}");
        assert_eq!(
            warns(r#"app_violations_total{variant="canary"}"#),
            Vec::<String>::new()
        );
        assert_eq!(
            warns(
                r#"envoy_cluster_upstream_cx_destroy_remote_with_active_rq{envoy_cluster_name="checkout-canary"}"#
            ),
            Vec::<String>::new()
        );
        let q = check("{source: {prometheus: {url: 'http://127.0.0.1:9090'}}, guardrails: [{zero_tolerance: {query: 'sum(increase(x_total{pod=~\"checkout-canary-.*\"}[{window}]))'}}]}")
            .unwrap();
        assert_eq!(q.warnings(), Vec::<String>::new());
    }

    /// The shipped example must not carry the trap it warns about.
    #[test]
    fn the_shipped_example_has_no_warnings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/checkout.yaml");
        let text = std::fs::read(path).unwrap();
        let (_, plan) = crate::spec::RolloutSpec::parse(&text, crate::spec::Format::Yaml).unwrap();
        assert_eq!(plan.warnings(), Vec::<String>::new());
        assert!(plan
            .analysis
            .unwrap()
            .guardrails
            .iter()
            .any(|g| matches!(g.kind, Kind::ZeroTolerance(_))));
    }

    fn field(yaml: &str) -> String {
        let e = check(yaml).unwrap_err();
        format!("{}: {}", e.field, e.message)
    }

    #[test]
    fn defaults_and_names() {
        let a = check("{guardrails: [{error_rate: {max: 5}}, {latency: {quantile: p99.9, max_ms: 200}, severity: warning}, {compare: {}}, {zero_tolerance: {metric: 'x_total{a=\"b\"}'}}]}").unwrap();
        assert_eq!(a.interval_ms, 30_000);
        assert_eq!((a.passes, a.failure_limit, a.nodata_limit), (2, 3, 3));
        assert_eq!(a.source.envoy.as_ref().unwrap().admin, vec![DEFAULT_ADMIN]);
        let names: Vec<&str> = a.guardrails.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            ["error-rate", "p99.9-latency", "vs-stable", "x_total"]
        );
        assert_eq!(a.guardrails[0].kind, Kind::ErrorRate { max: 0.05 });
        assert_eq!(a.guardrails[1].severity, Severity::Warning);
        assert!(
            matches!(a.guardrails[1].kind, Kind::Latency { q, .. } if (q - 0.999).abs() < 1e-12)
        );
        assert_eq!(
            a.guardrails[2].kind,
            Kind::Compare {
                ratio: 2.0,
                alpha: 0.01
            }
        );
    }

    #[test]
    fn every_error_names_its_field() {
        for (yaml, want) in [
            ("{guardrails: []}", "analysis.guardrails: list at least one"),
            ("{interval: 5x, guardrails: [{compare: {}}]}", "analysis.interval:"),
            ("{interval: 10ms, guardrails: [{compare: {}}]}", "analysis.interval: must be at least 100ms"),
            ("{guardrails: [{error_rate: {max: 101}}]}", "analysis.guardrails[0].error_rate.max: 101 is outside"),
            ("{guardrails: [{compare: {}}, {latency: {quantile: q99, max_ms: 1}}]}", "analysis.guardrails[1].latency.quantile:"),
            ("{guardrails: [{latency: {quantile: p99, max_ms: -1}}]}", "analysis.guardrails[0].latency.max_ms:"),
            ("{guardrails: [{compare: {ratio: 1}}]}", "analysis.guardrails[0].compare.ratio:"),
            ("{guardrails: [{compare: {alpha: 0.9}}]}", "analysis.guardrails[0].compare.alpha:"),
            ("{guardrails: [{burn_rate: {}}]}", "analysis.guardrails[0].burn_rate: needs `analysis.slo`"),
            ("{slo: 100, guardrails: [{compare: {}}]}", "analysis.slo:"),
            ("{slo: 99, guardrails: [{burn_rate: {windows: [{long: 1m, short: 5m, factor: 2}]}}]}", "analysis.guardrails[0].burn_rate.windows[0].short: must not be longer"),
            ("{guardrails: [{zero_tolerance: {}}]}", "analysis.guardrails[0].zero_tolerance: give exactly one"),
            ("{guardrails: [{zero_tolerance: {metric: 'a{b=c}'}}]}", "analysis.guardrails[0].zero_tolerance.metric:"),
            ("{guardrails: [{zero_tolerance: {query: 'up == 0'}}]}", "analysis.guardrails[0].zero_tolerance.query: only the `prometheus` source"),
            ("{guardrails: [{compare: {}, error_rate: {max: 1}}]}", "analysis.guardrails[0]: give exactly one"),
            ("{guardrails: [{compare: {}}, {compare: {}}]}", "analysis.guardrails[1].name: \"vs-stable\" is used twice"),
            ("{passes: 0, guardrails: [{compare: {}}]}", "analysis.passes: must be at least 1"),
            ("{source: {}, guardrails: [{compare: {}}]}", "analysis.source: give exactly one"),
            ("{source: {envoy: {admin: []}}, guardrails: [{compare: {}}]}", "analysis.source.envoy.admin: list at least one"),
            ("{source: {envoy: {admin: ['ftp://x']}}, guardrails: [{compare: {}}]}", "analysis.source.envoy.admin[0]:"),
            ("{source: {prometheus: {url: 'localhost'}}, guardrails: [{compare: {}}]}", "analysis.source.prometheus.url:"),
        ] {
            let got = field(yaml);
            assert!(got.starts_with(want), "{yaml}\n got: {got}\nwant: {want}");
        }
    }
}
