//! The series the sources read, declared once: a variant's requests, errors and latency
//! buckets (what counts as an error included), and the selectors that pick them. The envoy
//! source matches scraped samples against these selectors; the prometheus source's default
//! queries are written from the same selectors.

use linnet_core::decide::Variant;
use linnet_core::metrics;

/// `name{label="value",...}`: the series whose name and listed labels match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// Where one variant's traffic is read: every response, the errors among them, and the
/// latency histogram's cumulative buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSeries {
    pub requests: Selector,
    pub errors: Selector,
    pub buckets: Selector,
}

/// The label of a histogram bucket's upper bound.
pub const LE: &str = "le";

/// The filter's response class that is an error: a 5xx is the service's fault, a 4xx the
/// client's.
pub const ERROR_CLASS: &str = metrics::CLASSES[4];

/// Where a variant's traffic is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// By the filter, per rollout and variant (`linnet_responses_total`, …).
    Filter { rollout: String, variant: Variant },
    /// By Envoy, as the upstream stats of the cluster that serves the variant (or of the
    /// shadow cluster, which stands for the canary during a mirror step).
    Cluster(String),
}

/// Envoy's upstream stats of a cluster.
const CLUSTER_REQUESTS: &str = "envoy_cluster_upstream_rq_total";
const CLUSTER_RESPONSES_BY_CLASS: &str = "envoy_cluster_upstream_rq_xx";
const CLUSTER_RESPONSE_TIME: &str = "envoy_cluster_upstream_rq_time";
const CLUSTER_LABEL: &str = "envoy_cluster_name";
const CLUSTER_CLASS_LABEL: &str = "envoy_response_code_class";
/// Envoy's code class of a 5xx.
const CLUSTER_ERROR_CLASS: &str = "5";

// === impl Counted ===

impl Counted {
    /// By the filter, as `rollout`'s `variant`.
    pub fn filter(rollout: &str, variant: Variant) -> Counted {
        Counted::Filter {
            rollout: rollout.to_owned(),
            variant,
        }
    }
}

// === impl TrafficSeries ===

impl TrafficSeries {
    /// The series a variant's traffic is counted in.
    pub fn of(counted: &Counted) -> TrafficSeries {
        match counted {
            Counted::Filter { rollout, variant } => {
                TrafficSeries::variant(rollout, variant.as_str())
            }
            Counted::Cluster(cluster) => TrafficSeries::cluster(cluster),
        }
    }

    /// A rollout's variant (`canary` or `stable`) as the filter counts it.
    pub fn variant(rollout: &str, variant: &str) -> TrafficSeries {
        let ours = [("rollout", rollout), ("variant", variant)];
        TrafficSeries {
            requests: Selector::new(metrics::RESPONSES, &ours),
            errors: Selector::new(
                metrics::RESPONSES,
                &[ours[0], ours[1], ("class", ERROR_CLASS)],
            ),
            buckets: Selector::new(&buckets(metrics::RESPONSE_TIME), &ours),
        }
    }

    /// A cluster as Envoy counts its upstream requests.
    pub fn cluster(cluster: &str) -> TrafficSeries {
        let ours = [(CLUSTER_LABEL, cluster)];
        TrafficSeries {
            requests: Selector::new(CLUSTER_REQUESTS, &ours),
            errors: Selector::new(
                CLUSTER_RESPONSES_BY_CLASS,
                &[ours[0], (CLUSTER_CLASS_LABEL, CLUSTER_ERROR_CLASS)],
            ),
            buckets: Selector::new(&buckets(CLUSTER_RESPONSE_TIME), &ours),
        }
    }

    /// Every series name the sources read for traffic, of any rollout or cluster.
    pub fn names() -> Vec<String> {
        [TrafficSeries::variant("", ""), TrafficSeries::cluster("")]
            .into_iter()
            .flat_map(|t| [t.requests.name, t.errors.name, t.buckets.name])
            .collect()
    }
}

/// A Prometheus histogram's cumulative bucket series.
fn buckets(histogram: &str) -> String {
    format!("{histogram}_bucket")
}

/// PromQL for the increase of every series `selector` picks over `range`, added up.
pub fn increase(selector: &Selector, range: &str) -> String {
    format!("sum(increase({selector}[{range}]))")
}

// === impl Selector ===

impl Selector {
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Selector {
        Selector {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Parses `name` or `name{a="x",b="y"}`.
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        let (name, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!(
                "{s:?} is not a metric selector: write `name` or `name{{label=\"value\"}}`"
            ));
        }
        let mut labels = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .strip_prefix('{')
                .and_then(|r| r.strip_suffix('}'))
                .ok_or_else(|| format!("{s:?}: the label list must end with `}}`"))?;
            labels = super::exposition::parse_labels(inner).ok_or_else(|| {
                format!("{s:?}: labels must read label=\"value\", comma-separated")
            })?;
        }
        Ok(Selector {
            name: name.to_owned(),
            labels,
        })
    }

    pub fn matches(&self, name: &str, labels: &[(String, String)]) -> bool {
        name == self.name
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            f.write_str("{")?;
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{k}={v:?}")?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_name_and_listed_labels() {
        let s = Selector::parse(r#"linnet_override_rejected_total{rollout="web"}"#).unwrap();
        let l = |v: &str| vec![("rollout".to_owned(), v.to_owned())];
        assert!(s.matches("linnet_override_rejected_total", &l("web")));
        assert!(!s.matches("linnet_override_rejected_total", &l("api")));
        assert!(!s.matches("other", &l("web")));
        assert!(Selector::parse("9lives").is_err());
        assert_eq!(
            s.to_string(),
            r#"linnet_override_rejected_total{rollout="web"}"#
        );
    }
}
