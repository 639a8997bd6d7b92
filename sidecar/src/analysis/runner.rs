//! Runs analysis: every rollout with an `analysis` section is judged once per interval, its
//! run recorded and acted on through the controller.

use super::judge::{self, Observed};
use super::source::{self, Query, Source};
use super::spec::{Kind, SourceSpec};
use super::step;
use crate::clock::Millis;
use crate::controller::{Controller, Run, Target};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a source may take to answer.
const MAX_SOURCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the runner looks for new rollouts when none is due sooner.
const IDLE_MS: Millis = 1000;

/// One source per distinct source spec, so rollouts read through one Envoy share its scrapes.
#[derive(Default)]
pub struct Sources {
    built: HashMap<SourceSpec, Arc<dyn Source>>,
}

// === impl Sources ===

impl Sources {
    /// Uses `source` for every rollout whose spec names `spec` (tests bring their own).
    pub fn insert(&mut self, spec: SourceSpec, source: Arc<dyn Source>) {
        self.built.insert(spec, source);
    }

    fn get(&mut self, spec: &SourceSpec, interval_ms: Millis) -> Result<Arc<dyn Source>, String> {
        if let Some(s) = self.built.get(spec) {
            return Ok(s.clone());
        }
        let timeout =
            Duration::from_millis(u64::try_from(interval_ms).unwrap_or(0)).min(MAX_SOURCE_TIMEOUT);
        let s = source::build(spec, timeout)?;
        self.built.insert(spec.clone(), s.clone());
        Ok(s)
    }
}

/// Judges due rollouts until `shutdown` turns true.
pub fn spawn(ctl: Controller, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sources = Sources::default();
        loop {
            let next = match run_due(&ctl, &mut sources).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "analysis failed; retrying in 1s");
                    ctl.now_ms() + IDLE_MS
                }
            };
            let wait = u64::try_from(next.saturating_sub(ctl.now_ms())).unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = crate::signal::stopped(&mut shutdown) => break,
            }
        }
    })
}

/// Judges every rollout that is due; returns when the next one is.
pub async fn run_due(ctl: &Controller, sources: &mut Sources) -> Result<Millis, String> {
    let targets = ctl.analysis_targets().await.map_err(|e| e.to_string())?;
    let now = ctl.now_ms();
    let mut next = now + IDLE_MS;
    for t in targets {
        let due =
            t.rt.analysis
                .last_run_ms
                .map_or(now, |last| last + t.analysis.interval_ms);
        if due > now {
            next = next.min(due);
            continue;
        }
        let source = sources.get(&t.analysis.source, t.analysis.interval_ms);
        let run = run_one(t, source, now).await;
        let interval = run.1;
        ctl.record_analysis(run.0)
            .await
            .map_err(|e| e.to_string())?;
        next = next.min(now + interval);
    }
    Ok(next)
}

/// Observes, judges and decides one rollout.
async fn run_one(t: Target, source: Result<Arc<dyn Source>, String>, now: Millis) -> (Run, Millis) {
    let a = &t.analysis;
    let increment_ms = t.rt.analysis.last_run_ms.map_or(a.interval_ms, |last| {
        (now - last).clamp(1, a.interval_ms * 10)
    });
    let query = Query {
        rollout: t.name.clone(),
        shadow: t.shadow.clone(),
        now_ms: now,
        increment_ms,
        spans: judge::spans(a),
        counters: a
            .guardrails
            .iter()
            .filter_map(|g| match &g.kind {
                Kind::ZeroTolerance(c) => Some(c.clone()),
                _ => None,
            })
            .collect(),
    };
    let observed: Result<Observed, String> = match source {
        Ok(s) => s.observe(&query).await,
        Err(e) => Err(e),
    };
    let subject = if t.shadow.is_some() {
        "shadow"
    } else {
        "canary"
    };
    let (step, transitions) = match step::run(
        &t.plan,
        &t.rt,
        observed.as_ref().map_err(String::as_str),
        subject,
        now,
    ) {
        Ok(done) => done,
        Err(e) => {
            // Only a rollout the machine cannot move gets here; judge it, move nothing.
            tracing::warn!(rollout = %t.name, error = %e.0, "analysis decision not applicable");
            let step = step::judge(
                a,
                &t.rt,
                observed.as_ref().map_err(String::as_str),
                subject,
                now,
            );
            (step, Vec::new())
        }
    };
    let observed = match &observed {
        Ok(o) => json!(o),
        Err(e) => json!({ "error": e }),
    };
    (
        Run {
            name: t.name,
            id: t.id,
            was: t.rt,
            subject,
            step,
            transitions,
            observed,
        },
        a.interval_ms,
    )
}
