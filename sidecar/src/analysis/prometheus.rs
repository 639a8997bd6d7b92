//! The `prometheus` source: PromQL over the HTTP API, one query per metric, variant and
//! window, from templates a user may override. `increase()` handles counter resets; a
//! missing series reads as zero requests (so NoData), a NaN stays NaN (so NoData).

use super::exposition::parse_value;
use super::policy::{Counter, Queries};
use super::series::{increase, Counted, LE};
use super::source::{Answer, Observed, Query, Source};
use super::window::{Histogram, Traffic, Window};
use crate::client::Client;
use crate::clock::Millis;
use hyper::Method;
use linnet_core::decide::Variant;
use serde_json::Value;
use std::time::Duration;

pub struct PrometheusSource {
    url: String,
    client: Client,
    queries: Queries,
}

// === impl PrometheusSource ===

impl PrometheusSource {
    pub fn new(url: &str, queries: Queries, timeout: Duration) -> Result<Self, String> {
        Ok(PrometheusSource {
            url: url.trim_end_matches('/').to_owned(),
            client: Client::new(url, None)?.with_timeout(timeout),
            queries,
        })
    }

    /// The samples of an instant query: `(labels, value)` per series.
    async fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>, String> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = self
            .client
            .send(Method::GET, &path, None)
            .await
            .map_err(|e| {
                // The client names the whole URL, query included; the server is what matters.
                let cause = e.rsplit(": ").next().unwrap_or(&e);
                format!("Prometheus at {} did not answer: {cause}", self.url)
            })?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "{}/api/v1/query answered {status} with a body that is not JSON",
                self.url
            )
        })?;
        if v["status"] != "success" {
            let msg = v["error"].as_str().unwrap_or("no error message");
            return Err(format!("Prometheus refused {promql:?}: {msg}"));
        }
        let Some(result) = v["data"]["result"].as_array() else {
            return Err(format!(
                "Prometheus answered {promql:?} without a result list"
            ));
        };
        let mut out = Vec::with_capacity(result.len());
        for r in result {
            let value = r["value"][1]
                .as_str()
                .and_then(parse_value)
                .ok_or_else(|| {
                    format!("Prometheus answered {promql:?} with a sample that is not a number")
                })?;
            out.push((r["metric"].clone(), value));
        }
        Ok(out)
    }

    /// The sum over series; `None` without any.
    async fn scalar(&self, promql: &str) -> Result<Option<f64>, String> {
        let samples = self.query(promql).await?;
        Ok(samples.iter().map(|(_, v)| *v).reduce(|a, b| a + b))
    }

    async fn traffic(&self, q: &Query, span: Millis, canary: bool) -> Result<Traffic, String> {
        let (variant, counted) = if canary {
            (Variant::Canary, &q.canary)
        } else {
            (Variant::Stable, &q.stable)
        };
        let (req, err, lat, cluster) = match counted {
            Counted::Cluster(c) => (
                &self.queries.cluster_requests,
                &self.queries.cluster_errors,
                &self.queries.cluster_latency,
                c.as_str(),
            ),
            Counted::Filter { .. } => (
                &self.queries.requests,
                &self.queries.errors,
                &self.queries.latency,
                "",
            ),
        };
        let fill = |t: &str| fill(t, &q.rollout, variant.as_str(), cluster, span);
        let requests = self.scalar(&fill(req)).await?.unwrap_or(0.0);
        let errors = self.scalar(&fill(err)).await?.unwrap_or(0.0);
        let mut buckets = Vec::new();
        for (labels, v) in self.query(&fill(lat)).await? {
            if let Some(le) = labels[LE].as_str().and_then(parse_value) {
                buckets.push((le, v));
            }
        }
        Ok(Traffic {
            requests,
            errors,
            // NaN buckets make the histogram unusable, so latency has no data.
            latency: Histogram::from_buckets(buckets).unwrap_or_default(),
        })
    }

    async fn counter(&self, c: &Counter, span: Millis) -> Result<Option<f64>, String> {
        let promql = match (&c.metric, &c.query) {
            (_, Some(query)) => query.replace("{window}", &window(span)),
            (Some(m), None) => increase(m, &window(span)),
            (None, None) => return Ok(None),
        };
        self.scalar(&promql).await
    }

    async fn window(&self, q: &Query, span: Millis) -> Result<Window, String> {
        let mut counters = Vec::with_capacity(q.counters.len());
        for c in &q.counters {
            counters.push(self.counter(c, span).await?);
        }
        Ok(Window {
            span_ms: span,
            covered_ms: span,
            canary: self.traffic(q, span, true).await?,
            stable: self.traffic(q, span, false).await?,
            counters,
        })
    }

    async fn observe_now(&self, q: &Query) -> Result<Observed, String> {
        let increment = self.window(q, q.increment_ms).await?;
        let mut windows = Vec::with_capacity(q.spans.len());
        for span in &q.spans {
            windows.push(self.window(q, *span).await?);
        }
        Ok(Observed {
            increment,
            windows,
            missing: None,
        })
    }
}

impl Source for PrometheusSource {
    fn observe<'a>(&'a self, query: &'a Query) -> Answer<'a> {
        Box::pin(self.observe_now(query))
    }
}

/// A PromQL range: whole milliseconds, which Prometheus reads exactly.
fn window(span: Millis) -> String {
    format!("{}ms", span.max(1))
}

fn fill(template: &str, rollout: &str, variant: &str, cluster: &str, span: Millis) -> String {
    template
        .replace("{rollout}", rollout)
        .replace("{variant}", variant)
        .replace("{cluster}", cluster)
        .replace("{window}", &window(span))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_every_placeholder() {
        let q = Queries::default();
        let s = fill(&q.errors, "checkout", "canary", "", 30_000);
        assert_eq!(
            s,
            r#"sum(increase(linnet_responses_total{rollout="checkout",variant="canary",class="5xx"}[30000ms]))"#
        );
        let s = fill(
            &q.cluster_latency,
            "checkout",
            "canary",
            "checkout-shadow",
            1500,
        );
        assert!(s.contains(r#"envoy_cluster_name="checkout-shadow""#) && s.contains("[1500ms]"));
    }

    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(encode(r#"a{b="c"} [5m]"#), "a%7Bb%3D%22c%22%7D%20%5B5m%5D");
    }
}
