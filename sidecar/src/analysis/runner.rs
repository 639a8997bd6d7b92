//! Runs analysis: every rollout with an `analysis` section is judged once per interval, its
//! run recorded and acted on through the controller, which the runner reaches only through
//! [`Rollouts`] (the controller depends on the runner, never the reverse).

use super::judge;
use super::policy::{Analysis, Kind, SourceSpec};
use super::series::Counted;
use super::source::{self, Observed, Query, Source};
use super::step::{self, Step};
use crate::clock::Millis;
use crate::machine::{Outcome, Runtime};
use crate::spec::{Clusters, Plan};
use linnet_core::decide::Variant;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a source may take to answer.
const MAX_SOURCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the runner looks for new rollouts when none is due sooner.
const IDLE_MS: Millis = 1000;

/// How long a failing source is left alone at most between tries: four intervals, and never
/// more than five minutes, so a source that is back is seen soon.
const MAX_BACKOFF_MS: Millis = 5 * 60_000;
const MAX_BACKOFF_INTERVALS: Millis = 4;

/// A rollout that analysis judges now: running, or paused (by analysis, by an operator, or
/// held at a manual weight: a hold never switches the guardrails off).
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// The release, so a run is never recorded on a later rollout of the same name.
    pub id: i64,
    pub analysis: Analysis,
    pub plan: Plan,
    /// The shadow cluster, during a step that mirrors with no user on the canary.
    pub shadow: Option<String>,
    /// The variants' clusters, when the spec names them.
    pub clusters: Option<Clusters>,
    /// Where the rollout is as the run begins, with what analysis remembers.
    pub rt: Runtime,
}

/// One analysis run's result, to record and act on.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub id: i64,
    /// Where the rollout was when the run began; a run that anything overtook is dropped.
    pub was: Runtime,
    pub subject: &'static str,
    /// What the run judged and decided, with the run's memory.
    pub step: Step,
    /// The transitions its decision leads to, in order.
    pub transitions: Vec<(Runtime, Outcome)>,
    /// The inputs: every window the source returned, or why there were none.
    pub observed: Value,
}

/// Where the rollouts analysis judges live, and where its runs are recorded and acted on: the
/// controller.
pub trait Rollouts: source::Recall + Clone + Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
    /// The rollouts analysis should judge now.
    fn targets(&self) -> Pending<'_, Vec<Target>>;
    /// Records a run with its checks and inputs, then acts on its decision. `Ok(false)`: the
    /// rollout moved on while the run was out, so the run was dropped.
    fn record(&self, run: Run) -> Pending<'_, bool>;
}

/// An answer from [`Rollouts`]; `Err` says why there is none.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// One source per distinct source spec, so rollouts read through one Envoy share its scrapes,
/// and how each has been doing: a source that keeps failing is backed off, not hammered.
#[derive(Default)]
pub struct Sources {
    built: HashMap<SourceSpec, Arc<dyn Source>>,
    health: Arc<Mutex<HashMap<SourceSpec, Failing>>>,
    /// Where the sources it builds keep what must outlive a restart.
    recall: Option<Arc<dyn source::Recall>>,
}

/// A source's failures in a row, and when it may be asked again.
#[derive(Debug, Clone)]
struct Failing {
    count: u32,
    since_ms: Millis,
    retry_at_ms: Millis,
    last: String,
}

// === impl Sources ===

impl Sources {
    /// Sources that keep what they must remember in `recall` (the controller's store).
    pub fn recalling(recall: Arc<dyn source::Recall>) -> Sources {
        Sources {
            recall: Some(recall),
            ..Sources::default()
        }
    }

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
        let s = source::build(spec, timeout, self.recall.clone())?;
        self.built.insert(spec.clone(), s.clone());
        Ok(s)
    }

    /// Why `spec` is not asked now, while it is backed off.
    fn backed_off(&self, spec: &SourceSpec, now: Millis) -> Option<String> {
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let f = health.get(spec).filter(|f| now < f.retry_at_ms)?;
        Some(format!(
            "{} (the source failed {} times in a row since {}; backed off, next try in {})",
            f.last,
            f.count,
            crate::explain::clock_time(f.since_ms),
            judge::dur(f.retry_at_ms - now)
        ))
    }
}

/// Notes how a source answered: from the second failure in a row on, the wait before the
/// next try doubles from two intervals up to the caps; an answer clears it.
fn note(
    health: &Mutex<HashMap<SourceSpec, Failing>>,
    spec: &SourceSpec,
    interval_ms: Millis,
    now: Millis,
    outcome: Result<(), &str>,
) {
    let mut health = health.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(()) => {
            health.remove(spec);
        }
        Err(why) => {
            let f = health.entry(spec.clone()).or_insert(Failing {
                count: 0,
                since_ms: now,
                retry_at_ms: now,
                last: String::new(),
            });
            f.count = f.count.saturating_add(1);
            // The first failure is retried at the next run as usual.
            let exp = f.count.saturating_sub(1).min(16);
            let wait = interval_ms
                .saturating_mul(1 << exp)
                .min(interval_ms.saturating_mul(MAX_BACKOFF_INTERVALS))
                .min(MAX_BACKOFF_MS);
            f.retry_at_ms = if f.count > 1 { now + wait } else { now };
            f.last = why.to_owned();
        }
    }
}

/// Judges due rollouts until `shutdown` turns true. Each run is a task of its own, so a slow
/// or failing source holds back only the rollouts that read it, never the others.
pub fn spawn<R: Rollouts>(ctl: R, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let sources = Sources::recalling(Arc::new(ctl.clone()));
    spawn_with(ctl, sources, shutdown)
}

/// [`spawn`], reading through `sources` first (tests bring their own).
pub fn spawn_with<R: Rollouts>(
    ctl: R,
    mut sources: Sources,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
        // Which rollout each task judges: a task that fails or panics frees its rollout too.
        let mut in_flight: HashMap<tokio::task::Id, i64> = HashMap::new();
        loop {
            let busy: HashSet<i64> = in_flight.values().copied().collect();
            let next = match start_due(&ctl, &mut sources, &busy).await {
                Ok((next, started)) => {
                    for (id, job) in started {
                        let task = tasks.spawn(job);
                        in_flight.insert(task.id(), id);
                    }
                    next
                }
                Err(e) => {
                    tracing::error!(error = %e, "analysis failed; retrying in 1s");
                    ctl.now_ms() + IDLE_MS
                }
            };
            let wait = u64::try_from(next.saturating_sub(ctl.now_ms())).unwrap_or(0);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let task = match &done {
                        Ok((task, _)) => *task,
                        Err(e) => e.id(),
                    };
                    let rollout = in_flight.remove(&task);
                    match done {
                        Ok((_, Ok(()))) => {}
                        Ok((_, Err(e))) => {
                            tracing::error!(?rollout, error = %e, "recording an analysis run failed");
                        }
                        Err(e) => tracing::error!(?rollout, error = %e, "an analysis run failed"),
                    }
                }
                _ = crate::signal::stopped(&mut shutdown) => break,
            }
        }
        tasks.abort_all();
    })
}

/// One rollout's run: observe, judge, record and act.
type Job = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Judges every rollout that is due, all at once, and waits for them; returns when the next
/// one is due. (The server's loop does not wait: see [`spawn`].)
pub async fn run_due<R: Rollouts>(ctl: &R, sources: &mut Sources) -> Result<Millis, String> {
    let (next, started) = start_due(ctl, sources, &HashSet::new()).await?;
    let mut tasks = JoinSet::new();
    for (_, job) in started {
        tasks.spawn(job);
    }
    let mut first_error = Ok(());
    while let Some(done) = tasks.join_next().await {
        let result = done
            .map_err(|e| format!("analysis task: {e}"))
            .and_then(|r| r);
        if first_error.is_ok() {
            first_error = result;
        }
    }
    first_error.map(|()| next)
}

/// The runs due now (not already in flight), ready to start, and when the next is due.
async fn start_due<R: Rollouts>(
    ctl: &R,
    sources: &mut Sources,
    in_flight: &HashSet<i64>,
) -> Result<(Millis, Vec<(i64, Job)>), String> {
    let targets = ctl.targets().await?;
    let now = ctl.now_ms();
    let mut next = now + IDLE_MS;
    let mut started = Vec::new();
    for t in targets {
        let interval = t.analysis.interval_ms;
        let due =
            t.rt.analysis
                .last_run_ms
                .map_or(now, |last| last + interval);
        if in_flight.contains(&t.id) {
            // Its end wakes the loop.
            continue;
        }
        if due > now {
            next = next.min(due);
            continue;
        }
        next = next.min(now + interval);
        let spec = t.analysis.source.clone();
        let source = match sources.backed_off(&spec, now) {
            Some(why) => Err(why),
            None => sources.get(&spec, interval),
        };
        let health = sources.health.clone();
        let ctl = ctl.clone();
        let id = t.id;
        let job: Job = Box::pin(async move {
            let (run, answered) = run_one(t, source, now).await;
            if let Some(outcome) = answered {
                note(
                    &health,
                    &spec,
                    interval,
                    now,
                    outcome.as_ref().map(|_| ()).map_err(String::as_str),
                );
            }
            ctl.record(run).await.map(|_| ())
        });
        started.push((id, job));
    }
    Ok((next, started))
}

/// Observes, judges and decides one rollout.
/// The second value is the source's answer, when it was asked (for its backoff).
async fn run_one(
    t: Target,
    source: Result<Arc<dyn Source>, String>,
    now: Millis,
) -> (Run, Option<Result<(), String>>) {
    let a = &t.analysis;
    let increment_ms = t.rt.analysis.last_run_ms.map_or(a.interval_ms, |last| {
        (now - last).clamp(1, a.interval_ms * 10)
    });
    // Envoy's stats of a variant's cluster when the spec names it; the shadow stands for the
    // canary while only copies reach it; else the filter's per-variant counts.
    let canary = match (&t.shadow, &t.clusters) {
        (Some(shadow), _) => Counted::Cluster(shadow.clone()),
        (None, Some(c)) => Counted::Cluster(c.canary.clone()),
        (None, None) => Counted::filter(&t.name, Variant::Canary),
    };
    let stable = t.clusters.as_ref().map_or_else(
        || Counted::filter(&t.name, Variant::Stable),
        |c| Counted::Cluster(c.stable.clone()),
    );
    let query = Query {
        rollout: t.name.clone(),
        canary,
        stable,
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
    let (observed, answered): (Result<Observed, String>, _) = match source {
        Ok(s) => {
            let o = s.observe(&query).await;
            let answered = o.as_ref().map(|_| ()).map_err(Clone::clone);
            (o, Some(answered))
        }
        // Backed off, or not buildable: not asked, so not an answer for its backoff.
        Err(why) => (Err(why), None),
    };
    let subject = if t.shadow.is_some() {
        "shadow"
    } else {
        "canary"
    };
    let (step, transitions) = step::run(
        &t.plan,
        a,
        &t.rt,
        observed.as_ref().map_err(String::as_str),
        subject,
        now,
    );
    // Only a rollout the machine cannot move gets an `Err`: the run is recorded, nothing moves.
    let transitions = transitions.unwrap_or_else(|e| {
        tracing::warn!(rollout = %t.name, error = %e.0, "analysis decision not applicable");
        Vec::new()
    });
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
        answered,
    )
}
