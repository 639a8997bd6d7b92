//! The `envoy` source: scrapes `/stats/prometheus` of one or more Envoy admins and turns the
//! counters into windows from its own history of scrapes.
//!
//! A counter that went down between two scrapes was reset (Envoy restarted): its new value
//! is all increase. A window reaching back before the first scrape covers only what was
//! seen; one scrape alone shows no window at all.

use super::exposition::{self, Sample};
use super::policy::{admin_url, Counter};
use super::series::{Selector, TrafficSeries, LE};
use super::source::{Answer, Observed, Query, Recall, Source};
use super::window::{Histogram, Traffic, Window};
use crate::client::Client;
use crate::clock::Millis;
use hyper::Method;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// History kept per admin: enough for the longest window asked, and never more scrapes.
const MAX_SCRAPES: usize = 4096;
const KEEP_EXTRA_MS: Millis = 60_000;
/// Every filter metric is kept (besides the shadow's cluster stats and the counters asked
/// for), so a zero-tolerance counter on one is in every scrape of an admin, whichever
/// rollout's run took it.
const FILTER_PREFIX: &str = "linnet_";
/// How long a histogram merge started by an admin read is given before the scrape.
const FLUSH_WAIT: Duration = Duration::from_millis(50);

pub struct EnvoySource {
    admins: Vec<Admin>,
    recall: Option<Arc<dyn Recall>>,
}

/// A kept scrape older than this is not a window's start after a restart.
const MAX_RECALLED_AGE_MS: Millis = 60 * 60_000;

struct Admin {
    url: String,
    client: Client,
    history: Mutex<VecDeque<Scrape>>,
    /// Per rollout reading this admin: its longest window, and when it last asked.
    wanted: Mutex<HashMap<String, (Millis, Millis)>>,
    /// The last scrape kept before a restart, until the first scrape after it.
    recalled: Mutex<Option<Scrape>>,
}

/// One scrape: every kept series by its full text key.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Scrape {
    pub at_ms: Millis,
    pub series: HashMap<String, Sample>,
}

// === impl EnvoySource ===

impl EnvoySource {
    pub fn new(
        admins: &[String],
        timeout: Duration,
        recall: Option<Arc<dyn Recall>>,
    ) -> Result<EnvoySource, String> {
        let admins = admins
            .iter()
            .map(|a| {
                let url = admin_url(a)?;
                Ok(Admin {
                    client: Client::new(&url, None)?.with_timeout(timeout),
                    history: Mutex::new(VecDeque::new()),
                    wanted: Mutex::new(HashMap::new()),
                    recalled: Mutex::new(
                        recall
                            .as_ref()
                            .and_then(|r| r.recall(&memory_key(&url)))
                            .and_then(|(text, _)| serde_json::from_str(&text).ok()),
                    ),
                    url,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(EnvoySource { admins, recall })
    }

    async fn observe_now(&self, q: &Query) -> Result<Observed, String> {
        let longest = q
            .spans
            .iter()
            .copied()
            .chain([q.increment_ms])
            .max()
            .unwrap_or(0);
        // With `stats_flush_on_admin`, an admin stats read starts a histogram merge that
        // finishes after the answer: read every admin once to start it, wait once, so the
        // scrapes see this interval's latencies rather than the previous one's. An admin that
        // does not answer is left out of this run, and said so.
        let mut missing: Vec<String> = Vec::new();
        let mut reachable = Vec::with_capacity(self.admins.len());
        for admin in &self.admins {
            let flush = admin
                .client
                .send(
                    Method::GET,
                    "/stats?usedonly&filter=linnet_flush_only",
                    None,
                )
                .await;
            match flush {
                Ok(_) => reachable.push(admin),
                Err(e) => missing.push(e),
            }
        }
        if !reachable.is_empty() {
            tokio::time::sleep(FLUSH_WAIT).await;
        }
        let mut per_admin = Vec::with_capacity(reachable.len());
        for admin in reachable {
            match admin.observe(q, longest, self.recall.clone()).await {
                Ok(windows) => per_admin.push(windows),
                Err(e) => missing.push(e),
            }
        }
        let all = self.admins.len();
        let answered = per_admin.len();
        // Judged only with more than half of the Envoys: a minority cannot speak for the
        // service, and the missing ones are named in every check.
        if answered * 2 <= all {
            return Err(if all == 1 {
                missing.join("; ")
            } else {
                format!(
                    "{answered} of {all} Envoys answered, more than half are needed: {}",
                    missing.join("; ")
                )
            });
        }
        // Add the admins up, window by window.
        let mut total: Option<Vec<Window>> = None;
        for windows in per_admin {
            total = Some(match total {
                None => windows,
                Some(acc) => acc
                    .into_iter()
                    .zip(windows)
                    .map(|(a, b)| add(a, b))
                    .collect(),
            });
        }
        let mut windows = total.ok_or("no admin to scrape")?;
        if windows.is_empty() {
            return Err("no window".into());
        }
        let increment = windows.remove(0);
        let missing = (!missing.is_empty()).then(|| {
            format!(
                "{answered} of {all} Envoys answered; left out: {}",
                missing.join("; ")
            )
        });
        Ok(Observed {
            increment,
            windows,
            missing,
        })
    }
}

// === impl Admin ===

impl Admin {
    /// Scrapes this admin and returns the increment and each window, from its history.
    async fn observe(
        &self,
        q: &Query,
        longest: Millis,
        recall: Option<Arc<dyn Recall>>,
    ) -> Result<Vec<Window>, String> {
        // A zero-tolerance counter must be seen while it is still zero (absent is no data,
        // never a pass), so with counters every stat is read, used or not.
        let path = if q.counters.is_empty() {
            "/stats/prometheus?usedonly"
        } else {
            "/stats/prometheus"
        };
        let (status, body) = self.client.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(format!("{}{path} answered {status}", self.url));
        }
        let body = String::from_utf8_lossy(&body);
        let traffic = TrafficSeries::names();
        let keep = |name: &str| {
            name.starts_with(FILTER_PREFIX)
                || traffic.iter().any(|n| n == name)
                || q.counters
                    .iter()
                    .any(|c| c.metric.as_ref().is_some_and(|m| m.name == name))
        };
        let scrape = Scrape {
            at_ms: q.now_ms,
            series: exposition::parse(&body, keep)
                .into_iter()
                .map(|s| (key(&s), s))
                .collect(),
        };
        // Every rollout reading this admin keeps the history its longest window needs: the
        // longest asked by any of them lately, not only by this one.
        let keep_ms = {
            let mut wanted = self.wanted.lock().map_err(|_| "poisoned".to_owned())?;
            keep_for(&mut wanted, &q.rollout, longest, q.now_ms)
        };
        // Kept for the first run after a restart, off the async threads.
        if let Some(recall) = recall {
            if let Ok(text) = serde_json::to_string(&scrape) {
                let (key, at) = (memory_key(&self.url), scrape.at_ms);
                tokio::task::spawn_blocking(move || recall.keep(&key, &text, at));
            }
        }
        let recalled = self
            .recalled
            .lock()
            .map_err(|_| "poisoned".to_owned())?
            .take();
        let mut history = self
            .history
            .lock()
            .map_err(|_| "scrape history poisoned".to_owned())?;
        if let Some(before) = recalled {
            // The sidecar restarted: the last scrape before it starts the first window.
            let age = q.now_ms - before.at_ms;
            if history.is_empty() && age > 0 && age <= MAX_RECALLED_AGE_MS {
                history.push_back(before);
            }
        }
        push(&mut history, scrape, keep_ms);
        std::iter::once(q.increment_ms)
            .chain(q.spans.iter().copied())
            .map(|span| window(&history, span, q).map_err(|e| format!("{}: {e}", self.url)))
            .collect()
    }
}

impl Source for EnvoySource {
    fn observe<'a>(&'a self, query: &'a Query) -> Answer<'a> {
        Box::pin(self.observe_now(query))
    }
}

/// Where an admin's last scrape is kept.
fn memory_key(url: &str) -> String {
    format!("envoy:{url}")
}

fn key(s: &Sample) -> String {
    let mut k = s.name.clone();
    for (n, v) in &s.labels {
        k.push('|');
        k.push_str(n);
        k.push('=');
        k.push_str(v);
    }
    k
}

/// Notes that `rollout` needs `longest` now; returns the longest any rollout still reading
/// this admin needs (one that stopped asking is forgotten once its window has passed).
fn keep_for(
    wanted: &mut HashMap<String, (Millis, Millis)>,
    rollout: &str,
    longest: Millis,
    now: Millis,
) -> Millis {
    wanted.insert(rollout.to_owned(), (longest, now));
    wanted.retain(|_, (span, at)| now - *at <= *span + KEEP_EXTRA_MS);
    wanted
        .values()
        .map(|(span, _)| *span)
        .max()
        .unwrap_or(longest)
}

fn push(history: &mut VecDeque<Scrape>, scrape: Scrape, longest: Millis) {
    let now = scrape.at_ms;
    history.push_back(scrape);
    // Keep one scrape older than the longest window, so that window has its start.
    while history.len() > 2
        && history
            .get(1)
            .is_some_and(|s| s.at_ms < now - longest - KEEP_EXTRA_MS)
    {
        history.pop_front();
    }
    while history.len() > MAX_SCRAPES {
        history.pop_front();
    }
}

/// The increases over `span` ending at the latest scrape.
pub fn window(history: &VecDeque<Scrape>, span: Millis, q: &Query) -> Result<Window, String> {
    let Some(last) = history.back() else {
        return Err("nothing scraped yet".into());
    };
    if history.len() < 2 {
        return Err("first scrape taken; a window needs two".into());
    }
    let start = last.at_ms - span;
    let base = history.iter().rposition(|s| s.at_ms <= start).unwrap_or(0);
    let covered_ms = last.at_ms - history.get(base).map_or(last.at_ms, |s| s.at_ms);
    // Ordered by series, so the sums below add in the same order on every run.
    let mut inc: BTreeMap<&str, (&Sample, f64)> = BTreeMap::new();
    for i in base + 1..history.len() {
        let (Some(prev), Some(cur)) = (history.get(i - 1), history.get(i)) else {
            continue;
        };
        for (k, s) in &cur.series {
            let before = prev.series.get(k).map_or(0.0, |p| p.value);
            // A drop is a reset: everything counted since is new.
            let d = if s.value >= before {
                s.value - before
            } else {
                s.value
            };
            let e = inc.entry(k.as_str()).or_insert((s, 0.0));
            e.1 += d;
        }
    }
    let increases: Vec<(&Sample, f64)> = inc.into_values().collect();
    let canary = TrafficSeries::of(&q.canary);
    let stable = TrafficSeries::of(&q.stable);
    let counters = q.counters.iter().map(|c| counter(&increases, c)).collect();
    Ok(Window {
        span_ms: span,
        covered_ms,
        canary: traffic(&increases, &canary),
        stable: traffic(&increases, &stable),
        counters,
    })
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn traffic(increases: &[(&Sample, f64)], series: &TrafficSeries) -> Traffic {
    let sum = |selector: &Selector| {
        increases
            .iter()
            .filter(|(s, _)| selector.matches(&s.name, &s.labels))
            // `sum` of nothing is -0.0, which would read "-0 errors"; a fold from 0.0 is not.
            .fold(0.0, |total, (_, d)| total + d)
    };
    let mut hist = Vec::new();
    for (s, d) in increases {
        if series.buckets.matches(&s.name, &s.labels) {
            if let Some(le) = label(s, LE).and_then(exposition::parse_value) {
                hist.push((le, *d));
            }
        }
    }
    Traffic {
        requests: sum(&series.requests),
        errors: sum(&series.errors),
        latency: Histogram::from_buckets(hist).unwrap_or_default(),
    }
}

fn counter(increases: &[(&Sample, f64)], c: &Counter) -> Option<f64> {
    let m = c.metric.as_ref()?;
    let mut found = None;
    for (s, d) in increases {
        if m.matches(&s.name, &s.labels) {
            *found.get_or_insert(0.0) += d;
        }
    }
    found
}

fn add(a: Window, b: Window) -> Window {
    let t = |x: Traffic, y: Traffic| {
        let mut buckets = x.latency.buckets;
        buckets.extend(y.latency.buckets);
        Traffic {
            requests: x.requests + y.requests,
            errors: x.errors + y.errors,
            latency: Histogram::from_buckets(buckets).unwrap_or_default(),
        }
    };
    Window {
        span_ms: a.span_ms,
        covered_ms: a.covered_ms.min(b.covered_ms),
        canary: t(a.canary, b.canary),
        stable: t(a.stable, b.stable),
        counters: a
            .counters
            .into_iter()
            .zip(b.counters)
            .map(|(x, y)| match (x, y) {
                (None, None) => None,
                (x, y) => Some(x.unwrap_or(0.0) + y.unwrap_or(0.0)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::series::Counted;
    use linnet_core::decide::Variant;

    fn scrape(at_ms: Millis, text: &str) -> Scrape {
        Scrape {
            at_ms,
            series: exposition::parse(text, |_| true)
                .into_iter()
                .map(|s| (key(&s), s))
                .collect(),
        }
    }

    fn lines(canary_ok: u64, canary_5xx: u64, stable_ok: u64, rejected: u64) -> String {
        format!(
            r#"linnet_responses_total{{rollout="r",variant="canary",class="2xx"}} {canary_ok}
linnet_responses_total{{rollout="r",variant="canary",class="5xx"}} {canary_5xx}
linnet_responses_total{{rollout="r",variant="stable",class="2xx"}} {stable_ok}
linnet_responses_total{{rollout="other",variant="canary",class="5xx"}} 999
linnet_response_time_ms_bucket{{rollout="r",variant="canary",le="10"}} {canary_ok}
linnet_response_time_ms_bucket{{rollout="r",variant="canary",le="+Inf"}} {}
linnet_override_rejected_total{{rollout="r"}} {rejected}
"#,
            canary_ok + canary_5xx
        )
    }

    fn query(counters: Vec<Counter>) -> Query {
        Query {
            rollout: "r".into(),
            canary: Counted::filter("r", Variant::Canary),
            stable: Counted::filter("r", Variant::Stable),
            now_ms: 0,
            increment_ms: 10_000,
            spans: vec![],
            counters,
        }
    }

    #[test]
    fn windows_are_deltas_and_survive_a_reset() {
        let mut h = VecDeque::new();
        push(&mut h, scrape(0, &lines(100, 0, 1000, 0)), 60_000);
        push(&mut h, scrape(10_000, &lines(150, 10, 1500, 0)), 60_000);
        // Envoy restarted: counters start again from zero.
        push(&mut h, scrape(20_000, &lines(20, 5, 100, 2)), 60_000);
        let rejected = Counter {
            metric: Some(
                Selector::parse(r#"linnet_override_rejected_total{rollout="r"}"#).unwrap(),
            ),
            query: None,
        };
        let q = query(vec![rejected]);
        let w = window(&h, 10_000, &q).unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (25.0, 5.0));
        assert_eq!(w.stable.requests, 100.0);
        assert_eq!(w.counters, vec![Some(2.0)]);
        let w = window(&h, 20_000, &q).unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (85.0, 15.0));
        assert_eq!(w.stable.requests, 600.0);
        assert_eq!(w.covered_ms, 20_000);
        assert_eq!(w.canary.latency.count(), 85.0);
        // Longer than the history: only what was seen.
        let w = window(&h, 60_000, &q).unwrap();
        assert_eq!(w.covered_ms, 20_000);
    }

    #[test]
    fn no_error_series_is_zero_errors_not_minus_zero() {
        let mut h = VecDeque::new();
        push(&mut h, scrape(0, ""), 60_000);
        push(&mut h, scrape(10_000, ""), 60_000);
        let w = window(&h, 10_000, &query(vec![])).unwrap();
        assert_eq!(w.canary.errors, 0.0);
        assert!(w.canary.errors.is_sign_positive() && w.stable.requests.is_sign_positive());
    }

    #[test]
    fn one_scrape_is_no_window_and_a_missing_counter_is_none() {
        let mut h = VecDeque::new();
        push(&mut h, scrape(0, &lines(1, 0, 1, 0)), 1000);
        let q = query(vec![Counter {
            metric: Some(Selector::parse("nope_total").unwrap()),
            query: None,
        }]);
        assert!(window(&h, 1000, &q).is_err());
        push(&mut h, scrape(1000, &lines(2, 0, 2, 0)), 1000);
        assert_eq!(window(&h, 1000, &q).unwrap().counters, vec![None]);
    }

    #[test]
    fn shadow_traffic_comes_from_the_cluster_stats() {
        let text = |n: u64, e: u64| {
            format!(
                r#"envoy_cluster_upstream_rq_total{{envoy_cluster_name="c-shadow"}} {n}
envoy_cluster_upstream_rq_xx{{envoy_response_code_class="5",envoy_cluster_name="c-shadow"}} {e}
envoy_cluster_upstream_rq_xx{{envoy_response_code_class="2",envoy_cluster_name="c-shadow"}} {}
envoy_cluster_upstream_rq_total{{envoy_cluster_name="c-stable"}} 77
"#,
                n - e
            )
        };
        let mut h = VecDeque::new();
        push(&mut h, scrape(0, &text(10, 1)), 5000);
        push(&mut h, scrape(5000, &text(110, 21)), 5000);
        let mut q = query(vec![]);
        q.canary = Counted::Cluster("c-shadow".into());
        let w = window(&h, 5000, &q).unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (100.0, 20.0));
    }

    #[test]
    fn rollouts_sharing_an_admin_keep_the_history_each_needs() {
        let mut wanted = HashMap::new();
        let mut h = VecDeque::new();
        // "long" judges 10 minutes; "short" only 10 s, and asks far more often.
        assert_eq!(keep_for(&mut wanted, "long", 600_000, 0), 600_000);
        for i in 0..120 {
            let now = i * 5000;
            let keep = keep_for(&mut wanted, "short", 10_000, now);
            assert_eq!(keep, 600_000, "at {now}");
            push(&mut h, scrape(now, ""), keep);
        }
        let q = query(vec![]);
        assert_eq!(window(&h, 600_000, &q).unwrap().covered_ms, 595_000);
        // Once "long" has stopped asking for longer than its window, it is forgotten.
        assert_eq!(keep_for(&mut wanted, "short", 10_000, 1_300_000), 10_000);
    }

    #[test]
    fn history_is_bounded_by_the_longest_window() {
        let mut h = VecDeque::new();
        for i in 0..1000 {
            push(&mut h, scrape(i * 1000, ""), 10_000);
        }
        // 10 s window + 60 s extra, one scrape per second, plus the window's start.
        assert!(h.len() <= 72, "{}", h.len());
        let q = query(vec![]);
        assert_eq!(window(&h, 10_000, &q).unwrap().covered_ms, 10_000);
    }
}
