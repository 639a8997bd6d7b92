//! A release's evidence report: what was shipped, how it was judged and why it ended as it
//! did. It is built from the store's audit trail alone (events, and the transitions and checks
//! committed with them), never from live state, so a report made later says the same.
//!
//! One document, two forms: JSON (`Accept: application/json`), and one self-contained HTML
//! file that carries the same JSON and the dashboard's own script and style inline, so it
//! opens with no server and no network and draws the same charts the dashboard draws.

use crate::analysis::window::Traffic;
use crate::analysis::{Check, Observed};
use crate::clock::Millis;
use crate::controller::Status;
use crate::controller::{Controller, RolloutRef};
use crate::event::{actor, Event, Moved, Payload};
use crate::explain::{self, Line};
use crate::machine::{Move, State};
use crate::spec::RolloutSpec;
use crate::store::Transition;
use crate::ui;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The most events a report reads; a longer release is reported on its latest ones, and says so.
pub const MAX_EVENTS: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    pub rollout: String,
    pub id: i64,
    pub state: State,
    pub finished: bool,
    pub created_at_ms: Millis,
    pub finished_at_ms: Option<Millis>,
    pub generated_at_ms: Millis,
    /// As written, secrets redacted.
    pub spec: RolloutSpec,
    /// How it ended (or where it stands), why, and who or what decided.
    pub decision: Decision,
    /// Every change of state, step, weight or kill switch, oldest first.
    pub changes: Vec<Change>,
    /// The store's transitions of this release (state or step changed), oldest first.
    pub transitions: Vec<Transition>,
    /// Every analysis run with what it observed and every check it made, oldest first.
    pub runs: Vec<Run>,
    /// The decision timeline in the words of `linnet explain`.
    pub timeline: Vec<Line>,
    /// More than [`MAX_EVENTS`] events: the report covers the latest ones only.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub state: State,
    pub at_ms: Option<Millis>,
    pub reason: Option<String>,
    /// Who made the last change (as [`Change::actor`]).
    pub actor: Option<String>,
}

/// One audited change of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// The audit event's id.
    pub event: i64,
    pub at_ms: Millis,
    /// The move: `started`, `step`, `paused`, `promoted`, `rolled_back`, …
    pub kind: String,
    /// Where it took the rollout, and why: the audit event's own payload.
    #[serde(flatten)]
    pub moved: Moved,
    /// Who made it: the audit event's actor, a key's name (`admin` for the admin token) for
    /// a call of the API (the CLI, the dashboard, a pipeline, Alertmanager), or `analysis`,
    /// `schedule`, `deadline`, `gate`.
    pub actor: String,
}

/// One analysis run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    pub event: i64,
    pub at_ms: Millis,
    pub step: usize,
    pub weight: f64,
    /// `canary`, or `shadow` during a mirror step.
    pub subject: String,
    pub decision: String,
    pub reason: String,
    /// The traffic since the previous run, per variant; absent when the source had none.
    pub canary: Option<Sample>,
    pub stable: Option<Sample>,
    /// Why the source answered nothing, when it did not.
    pub source_error: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub checks: Vec<Check>,
}

/// One variant's traffic over one analysis window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    pub requests: f64,
    pub errors: f64,
    /// How much time the window covered.
    pub covered_ms: Millis,
    pub requests_per_s: Option<f64>,
    /// 5xx / requests; absent with no requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

// === build ===

/// The report of `status`'s release from its events (oldest first) and transitions.
pub fn build(
    status: Status,
    events: &[Event],
    transitions: Vec<Transition>,
    truncated: bool,
    now: Millis,
) -> Report {
    let mut changes = Vec::new();
    let mut runs = Vec::new();
    for e in events {
        match &e.payload {
            Payload::Moved(kind, m) => changes.push(Change {
                event: e.id,
                at_ms: e.at_ms,
                kind: kind.as_str().to_owned(),
                moved: m.clone(),
                actor: e.actor.clone(),
            }),
            Payload::Analysis(run) => {
                let observed = serde_json::from_value::<Observed>(run.observed.clone()).ok();
                let covered = observed.as_ref().map_or(0, |o| o.increment.covered_ms);
                runs.push(Run {
                    event: e.id,
                    at_ms: e.at_ms,
                    step: run.step,
                    weight: run.weight,
                    subject: run.subject.clone(),
                    decision: run.decision.as_str().to_owned(),
                    reason: run.reason.clone(),
                    canary: observed
                        .as_ref()
                        .map(|o| sample(&o.increment.canary, covered)),
                    stable: observed
                        .as_ref()
                        .map(|o| sample(&o.increment.stable, covered)),
                    source_error: run
                        .observed
                        .get("error")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    checks: run.checks.clone(),
                });
            }
            // In the timeline, in words.
            Payload::Created(_)
            | Payload::KillSwitch(_)
            | Payload::Key(_)
            | Payload::Gate(_)
            | Payload::Alert(_)
            | Payload::Unread { .. } => {}
        }
    }
    let last = changes.last();
    let decision = Decision {
        state: status.state,
        at_ms: last.map(|c| c.at_ms),
        reason: last.map(|c| c.moved.reason.clone()),
        actor: last.map(|c| c.actor.clone()),
    };
    Report {
        rollout: status.name,
        id: status.id,
        state: status.state,
        finished: status.finished,
        created_at_ms: status.created_at_ms,
        finished_at_ms: status.finished_at_ms,
        generated_at_ms: now,
        spec: status.spec,
        decision,
        changes,
        transitions,
        runs,
        timeline: explain::timeline(events),
        truncated,
    }
}

/// Who made a move recorded before events named their actor. Operators' controls say so in
/// their reason (`… by operator`), and before keys every operator was the admin token, as
/// was Alertmanager; the machine's own moves are the schedule's, except the deadline's; the
/// rest are analysis's (a rollback, or a pause for missing data, and the resume when data
/// is back).
pub fn legacy_actor(kind: Move, reason: &str) -> &'static str {
    if reason.contains("by operator") || reason.starts_with("alert ") {
        return actor::ADMIN;
    }
    if reason.starts_with("gate ") {
        return actor::GATE;
    }
    match kind {
        Move::TimedOut => actor::DEADLINE,
        Move::Started | Move::Step | Move::Promoted | Move::Completed => actor::SCHEDULE,
        Move::Paused | Move::Resumed | Move::RolledBack => actor::ANALYSIS,
        Move::Weight | Move::KillSwitch | Move::Aborted | Move::Retried => actor::ADMIN,
    }
}

fn sample(t: &Traffic, covered_ms: Millis) -> Sample {
    let secs = covered_ms as f64 / 1000.0;
    let finite = |v: f64| v.is_finite().then_some(v);
    // Increases computed as differences can be -0.0; a report shows 0.
    let (requests, errors) = (t.requests + 0.0, t.errors + 0.0);
    Sample {
        requests,
        errors,
        covered_ms,
        requests_per_s: (secs > 0.0).then(|| requests / secs).and_then(finite),
        error_rate: (requests > 0.0).then(|| errors / requests).and_then(finite),
        p50_ms: t.latency.quantile(0.5).and_then(finite),
        p99_ms: t.latency.quantile(0.99).and_then(finite),
    }
}

// === render ===

/// The report as one self-contained HTML file.
pub fn html(report: &Report) -> Result<String, serde_json::Error> {
    let data = ui::script_json(report)?;
    let title = format!("Linnet report: {} (release {})", report.rollout, report.id);
    Ok(ui::page(
        &title,
        &format!(
            "<script type=\"application/json\" id=\"linnet-report\">{data}</script>\n\
             <main id=\"app\"><noscript>This report draws itself with JavaScript; its data is \
             the JSON in this file's <code>linnet-report</code> script element.</noscript></main>\n\
             <script>Linnet.showReport(document.getElementById('app'), \
             JSON.parse(document.getElementById('linnet-report').textContent));</script>"
        ),
    ))
}

// === the report directory (`serve --reports DIR`) ===

/// Writes `<name>-<id>.html` and `<name>-<id>.json` into `dir` for every release that ends,
/// from the event stream (a lagging stream catches up from the store, so none is skipped).
/// A failed write is logged and never touches the rollout.
pub fn spawn_writer(
    ctl: Controller,
    dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut live = ctl.subscribe();
        loop {
            let ended: Vec<i64> = tokio::select! {
                got = live.recv() => match got {
                    Ok(e) => ended(&e).into_iter().collect(),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "report writer lagged; reports of releases that ended meanwhile are written by `linnet report`");
                        Vec::new()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = crate::signal::stopped(&mut shutdown) => return,
            };
            for id in ended {
                match write(&ctl, &dir, id).await {
                    Ok(path) => tracing::info!(path = %path.display(), "report written"),
                    Err(e) => tracing::warn!(release = id, error = %e, "report not written"),
                }
            }
        }
    })
}

/// The release an event ends, if it ends one.
fn ended(e: &Event) -> Option<i64> {
    match &e.payload {
        Payload::Moved(_, m) if m.to.is_finished() && !m.from.is_finished() => e.rollout_id,
        _ => None,
    }
}

/// Writes release `id`'s report (HTML and JSON) into `dir`; returns the HTML file's path.
pub async fn write(ctl: &Controller, dir: &Path, id: i64) -> Result<PathBuf, String> {
    let report = ctl
        .report(RolloutRef::Id(id))
        .await
        .map_err(|e| e.to_string())?;
    let html = html(&report).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stem = file_stem(&report);
        let html_path = dir.join(format!("{stem}.html"));
        replace(&html_path, html.as_bytes())?;
        replace(&dir.join(format!("{stem}.json")), json.as_bytes())?;
        Ok(html_path)
    })
    .await
    .map_err(|e| format!("report task failed: {e}"))?
}

/// `<name>-<id>`, with anything but letters, digits, `-`, `_` and `.` as `_`.
pub fn file_stem(r: &Report) -> String {
    let name: String = r
        .rollout
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}-{}", r.id)
}

/// Writes `path` whole or not at all: a reader never sees half a report.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::window::Histogram;

    #[test]
    fn actors_of_old_events_are_read_from_the_move_and_its_reason() {
        for (kind, reason, by) in [
            (Move::Paused, "paused by operator", "admin"),
            (
                Move::RolledBack,
                "analysis: error rate 20% over 5%",
                "analysis",
            ),
            (
                Move::RolledBack,
                "alert HighErrors fired (critical)",
                "admin",
            ),
            (Move::RolledBack, "gate smoke held 3 times", "gate"),
            (Move::TimedOut, "the deadline passed", "deadline"),
            (Move::Step, "the pause of step 0 elapsed", "schedule"),
            (Move::Step, "promoted to step 2 by operator", "admin"),
            (Move::Aborted, "aborted", "admin"),
        ] {
            assert_eq!(legacy_actor(kind, reason), by, "{reason}");
        }
    }

    #[test]
    fn samples_have_rates_only_where_they_mean_something() {
        let t = Traffic {
            requests: 200.0,
            errors: 10.0,
            latency: Histogram::from_buckets(vec![
                (5.0, 100.0),
                (10.0, 190.0),
                (f64::INFINITY, 200.0),
            ])
            .unwrap_or_default(),
        };
        let s = sample(&t, 10_000);
        assert_eq!(s.requests_per_s, Some(20.0));
        assert_eq!(s.error_rate, Some(0.05));
        assert!(s.p50_ms.is_some_and(|p| p <= 5.0));
        let none = sample(&Traffic::default(), 0);
        assert_eq!((none.requests_per_s, none.error_rate), (None, None));
    }
}
