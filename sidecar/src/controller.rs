//! The rollout controller: owns the store and the live rollouts, applies controls and timers
//! through the state machine, and publishes each change (snapshot, events, metrics).
//!
//! One mutex serializes every mutation, and each runs on the blocking pool, so concurrent
//! controls on a rollout are applied one after another and none is lost.

use crate::analysis::{Analysis, Check, Decision, Memory};
use crate::clock::{Millis, SharedClock};
use crate::machine::{Control, Illegal, Runtime, State};
use crate::metrics::Metrics;
use crate::spec::{Plan, RolloutSpec};
use crate::store::{Change, Event, Loaded, RolloutWrite, Store, StoreError, Transition};
use bytes::Bytes;
use linnet_core::config::RolloutConfig;
use linnet_core::{ConfigError, SnapshotDoc};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

/// How many transitions a status shows.
const RECENT_TRANSITIONS: usize = 20;

#[derive(Clone)]
pub struct Controller {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    clock: SharedClock,
    events: broadcast::Sender<Arc<Event>>,
    snapshot: watch::Sender<Arc<Published>>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

struct Inner {
    store: Store,
    rollouts: BTreeMap<String, Entry>,
    version: u64,
    kill_switch: bool,
}

struct Entry {
    spec: RolloutSpec,
    plan: Plan,
    rt: Runtime,
}

/// The snapshot as served, serialized once per version.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum CtlError {
    NotFound(String),
    Conflict(String),
    Invalid(ConfigError),
    Store(StoreError),
}

/// What `GET /v1/rollouts/{name}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub state: State,
    pub step: usize,
    pub steps: usize,
    pub weight: f64,
    pub mirror: Option<Value>,
    pub kill_switch: bool,
    /// Waiting at an `until promoted` step.
    pub at_gate: bool,
    pub remaining_pause_ms: Option<Millis>,
    pub step_started_at_ms: Millis,
    pub step_ends_at_ms: Option<Millis>,
    pub deadline_at_ms: Option<Millis>,
    pub deadline_remaining_ms: Option<Millis>,
    pub now_ms: Millis,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    pub spec: RolloutSpec,
}

/// A rollout that analysis judges now: running, or paused by analysis for lack of data.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub analysis: Analysis,
    /// The shadow cluster, during a step that mirrors with no user on the canary.
    pub shadow: Option<String>,
    pub memory: Memory,
    pub state: State,
    pub step: usize,
}

/// One analysis run's result, to record and act on.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    /// Where the rollout was when the run began; a run that a transition overtook is dropped.
    pub state: State,
    pub step: usize,
    /// Whether analysis had paused it when the run began.
    pub was_paused: bool,
    pub subject: &'static str,
    pub checks: Vec<Check>,
    pub decision: Decision,
    pub memory: Memory,
    /// The inputs: every window the source returned, or why there were none.
    pub observed: Value,
}

// === impl CtlError ===

impl From<StoreError> for CtlError {
    fn from(e: StoreError) -> Self {
        CtlError::Store(e)
    }
}

impl From<Illegal> for CtlError {
    fn from(e: Illegal) -> Self {
        CtlError::Conflict(e.0)
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::NotFound(m) | CtlError::Conflict(m) => f.write_str(m),
            CtlError::Invalid(e) => write!(f, "{e}"),
            CtlError::Store(e) => write!(f, "{e}"),
        }
    }
}

// === impl Controller ===

impl Controller {
    /// Opens the store at `path` and loads every rollout.
    pub fn open(
        path: &Path,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Result<Controller, StoreError> {
        let store = Store::open(path)?;
        let Loaded {
            version,
            kill_switch,
            rollouts,
        } = store.load()?;
        let mut map = BTreeMap::new();
        for (spec, rt) in rollouts {
            // A stored spec was valid when written; if the rules have tightened since, say so.
            let plan = spec
                .validate()
                .map_err(|e| StoreError(format!("stored rollout {:?}: {e}", spec.name)))?;
            metrics.set_rollout(&spec.name, &rt);
            map.insert(spec.name.clone(), Entry { spec, plan, rt });
        }
        let inner = Inner {
            store,
            rollouts: map,
            version,
            kill_switch,
        };
        let published = Arc::new(inner.publish());
        metrics.set_version(version);
        let (events, _) = broadcast::channel(1024);
        Ok(Controller {
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                clock,
                events,
                snapshot: watch::Sender::new(published),
                wake: Notify::new(),
                metrics,
            }),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn now_ms(&self) -> Millis {
        self.shared.clock.now_ms()
    }

    /// Receives each new snapshot; the current one is there at once.
    pub fn snapshot(&self) -> watch::Receiver<Arc<Published>> {
        self.shared.snapshot.subscribe()
    }

    /// Receives every event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.shared.events.subscribe()
    }

    pub async fn create(&self, spec: RolloutSpec, plan: Plan) -> Result<Status, CtlError> {
        self.blocking(move |c| c.create_now(spec, plan)).await
    }

    pub async fn control(&self, name: String, control: Control) -> Result<Status, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            c.apply(&mut inner, &name, &control, now)?;
            // A control may make a step due at once (e.g. resume with nothing left).
            c.advance(&mut inner, &name, now)?;
            c.shared.wake.notify_one();
            inner.status(&name, now, true)
        })
        .await
    }

    pub async fn status(&self, name: String) -> Result<Status, CtlError> {
        self.blocking(move |c| c.lock().status(&name, c.now_ms(), true))
            .await
    }

    pub async fn list(&self) -> Result<Vec<Status>, CtlError> {
        self.blocking(|c| {
            let inner = c.lock();
            let now = c.now_ms();
            inner
                .rollouts
                .keys()
                .map(|n| inner.status(n, now, false))
                .collect()
        })
        .await
    }

    pub async fn kill_switch(&self) -> Result<bool, CtlError> {
        self.blocking(|c| Ok(c.lock().kill_switch)).await
    }

    pub async fn set_kill_switch(&self, on: bool) -> Result<bool, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            if inner.kill_switch == on {
                return Ok(on);
            }
            let mut data = Map::new();
            data.insert("on".into(), Value::Bool(on));
            data.insert(
                "reason".into(),
                Value::from(format!(
                    "global kill switch {} by operator",
                    if on { "on" } else { "off" }
                )),
            );
            let (event, version) = inner.store.commit(Change {
                at_ms: c.now_ms(),
                rollout: None,
                kill_switch: Some(on),
                bump_version: true,
                kind: "kill_switch",
                data,
                checks: &[],
            })?;
            inner.kill_switch = on;
            inner.version = version;
            c.published(&inner, event, true);
            Ok(on)
        })
        .await
    }

    /// Events after `after` (optionally of one rollout), oldest first.
    pub async fn events(
        &self,
        after: i64,
        rollout: Option<String>,
        limit: usize,
    ) -> Result<Vec<Event>, CtlError> {
        self.blocking(move |c| Ok(c.lock().store.events(after, rollout.as_deref(), limit)?))
            .await
    }

    /// Readiness: the store answers.
    pub async fn ping(&self) -> Result<(), CtlError> {
        self.blocking(|c| Ok(c.lock().store.ping()?)).await
    }

    /// For tests and the analysis issue: version, rollouts and events, read together.
    pub async fn fingerprint(&self) -> Result<(u64, usize, u64), CtlError> {
        self.blocking(|c| {
            let inner = c.lock();
            Ok((
                inner.version,
                inner.rollouts.len(),
                inner.store.event_count()?,
            ))
        })
        .await
    }

    /// The rollouts analysis should judge now.
    pub async fn analysis_targets(&self) -> Result<Vec<Target>, CtlError> {
        self.blocking(|c| {
            let inner = c.lock();
            Ok(inner
                .rollouts
                .values()
                .filter_map(|e| {
                    let analysis = e.plan.analysis.as_ref()?;
                    let judged = match e.rt.state {
                        State::Progressing | State::Shadowing => true,
                        State::Paused => e.rt.analysis.paused,
                        _ => false,
                    };
                    if !judged {
                        return None;
                    }
                    let shadow = if e.rt.weight == 0.0 && e.rt.mirror.is_some() {
                        e.spec.mirror_cluster.clone()
                    } else {
                        None
                    };
                    Some(Target {
                        name: e.spec.name.clone(),
                        analysis: analysis.clone(),
                        shadow,
                        memory: e.rt.analysis.clone(),
                        state: e.rt.state,
                        step: e.rt.step,
                    })
                })
                .collect())
        })
        .await
    }

    /// Records an analysis run with its checks and inputs, then acts on its decision.
    /// `Ok(false)`: the rollout moved on while the run was out, so the run was dropped.
    pub async fn record_analysis(&self, run: Run) -> Result<bool, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let Inner {
                store, rollouts, ..
            } = &mut *inner;
            let entry = rollouts
                .get_mut(&run.name)
                .ok_or_else(|| CtlError::NotFound(format!("no rollout named {:?}", run.name)))?;
            if entry.rt.state != run.state
                || entry.rt.step != run.step
                || entry.rt.analysis.paused != run.was_paused
            {
                return Ok(false);
            }
            let rt = Runtime {
                analysis: run.memory,
                ..entry.rt.clone()
            };
            let (action, reason) = match &run.decision {
                Decision::Pass(r) => ("pass", r),
                Decision::Hold(r) => ("hold", r),
                Decision::RollBack(r) => ("roll_back", r),
                Decision::Pause(r) => ("pause", r),
                Decision::Resume(r) => ("resume", r),
            };
            let mut data = Map::new();
            data.insert("step".into(), json!(rt.step));
            data.insert("weight".into(), json!(rt.weight));
            data.insert("subject".into(), json!(run.subject));
            data.insert("decision".into(), json!(action));
            data.insert("reason".into(), json!(reason));
            data.insert("checks".into(), json!(run.checks));
            data.insert("observed".into(), run.observed);
            let (event, _) = store.commit(Change {
                at_ms: now,
                rollout: Some(RolloutWrite {
                    spec: &entry.spec,
                    plan: &entry.plan,
                    runtime: &rt,
                    created: false,
                    transition: None,
                }),
                kill_switch: None,
                bump_version: false,
                kind: "analysis",
                data,
                checks: &run.checks,
            })?;
            tracing::info!(rollout = %run.name, decision = action, %reason, "analysis");
            entry.rt = rt;
            c.shared.metrics.count_analysis(&run.name, action);
            c.published(&inner, event, false);
            let control = match run.decision {
                Decision::RollBack(r) => Some(Control::RollBack(r)),
                Decision::Pause(r) => Some(Control::AnalysisPause(r)),
                Decision::Resume(r) => Some(Control::AnalysisResume(r)),
                Decision::Pass(_) | Decision::Hold(_) => None,
            };
            if let Some(control) = control {
                c.apply(&mut inner, &run.name, &control, now)?;
            }
            // Enough passes may let a step whose pause is over advance now.
            c.advance(&mut inner, &run.name, now)?;
            c.shared.wake.notify_one();
            Ok(true)
        })
        .await
    }

    /// The latest `limit` events of a rollout, oldest first: its timeline.
    pub async fn timeline(&self, name: String, limit: usize) -> Result<Vec<Event>, CtlError> {
        self.blocking(move |c| {
            let inner = c.lock();
            if !inner.rollouts.contains_key(&name) {
                return Err(CtlError::NotFound(format!("no rollout named {name:?}")));
            }
            Ok(inner.store.latest_events(&name, limit)?)
        })
        .await
    }

    /// Applies due timers to every rollout; returns the earliest time one could next be due.
    pub async fn tick(&self) -> Result<Option<Millis>, CtlError> {
        self.blocking(|c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let names: Vec<String> = inner.rollouts.keys().cloned().collect();
            for name in &names {
                c.advance(&mut inner, name, now)?;
            }
            Ok(inner
                .rollouts
                .values()
                .filter_map(|e| e.rt.next_wake(&e.plan))
                .min())
        })
        .await
    }

    /// Runs the timers until `shutdown` turns true: sleeps until the next due time or a wake.
    pub fn spawn_driver(&self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = match this.tick().await {
                    Ok(Some(at)) => Duration::from_millis(
                        u64::try_from(at.saturating_sub(this.now_ms())).unwrap_or(0),
                    ),
                    Ok(None) => Duration::from_secs(3600),
                    Err(e) => {
                        tracing::error!(error = %e, "rollout timers failed; retrying in 1s");
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = this.shared.wake.notified() => {}
                    _ = crate::signal::stopped(&mut shutdown) => break,
                }
            }
        })
    }

    fn create_now(&self, spec: RolloutSpec, plan: Plan) -> Result<Status, CtlError> {
        let mut inner = self.lock();
        let name = spec.name.clone();
        if inner.rollouts.contains_key(&name) {
            return Err(CtlError::Conflict(format!(
                "a rollout named {name:?} already exists"
            )));
        }
        let now = self.now_ms();
        let rt = Runtime::new(&plan, now);
        let mut data = Map::new();
        data.insert("state".into(), json!(rt.state));
        data.insert("steps".into(), json!(plan.steps.len()));
        data.insert("reason".into(), json!("created by operator"));
        let (event, version) = inner.store.commit(Change {
            at_ms: now,
            rollout: Some(RolloutWrite {
                spec: &spec,
                plan: &plan,
                runtime: &rt,
                created: true,
                transition: None,
            }),
            kill_switch: None,
            bump_version: true,
            kind: "created",
            data,
            checks: &[],
        })?;
        inner.version = version;
        inner
            .rollouts
            .insert(name.clone(), Entry { spec, plan, rt });
        self.published(&inner, event, true);
        // Enter the first step at once, as its own recorded transition.
        self.advance(&mut inner, &name, now)?;
        self.shared.wake.notify_one();
        inner.status(&name, now, true)
    }

    /// Ticks one rollout until nothing more is due (pause-0 steps pass in one go).
    fn advance(&self, inner: &mut Inner, name: &str, now: Millis) -> Result<(), CtlError> {
        let limit = inner
            .rollouts
            .get(name)
            .map_or(0, |e| e.plan.steps.len() + 2);
        for _ in 0..limit {
            if !self.apply(inner, name, &Control::Tick, now)? {
                break;
            }
        }
        Ok(())
    }

    /// Applies one control and commits it. `Ok(false)`: nothing changed.
    fn apply(
        &self,
        inner: &mut Inner,
        name: &str,
        control: &Control,
        now: Millis,
    ) -> Result<bool, CtlError> {
        let Inner {
            store, rollouts, ..
        } = &mut *inner;
        let entry = rollouts
            .get_mut(name)
            .ok_or_else(|| CtlError::NotFound(format!("no rollout named {name:?}")))?;
        let Some((rt, outcome)) = entry.rt.apply(&entry.plan, control, now)? else {
            return Ok(false);
        };
        let bump = served(&entry.spec, &entry.rt) != served(&entry.spec, &rt);
        let moved = entry.rt.state != rt.state || entry.rt.step != rt.step;
        let mut data = Map::new();
        data.insert("from".into(), json!(entry.rt.state));
        data.insert("to".into(), json!(rt.state));
        data.insert("step".into(), json!(rt.step));
        data.insert("weight".into(), json!(rt.weight));
        data.insert("mirror".into(), json!(rt.mirror));
        data.insert("kill_switch".into(), json!(rt.kill_switch));
        data.insert("reason".into(), json!(outcome.reason));
        let (event, version) = store.commit(Change {
            at_ms: now,
            rollout: Some(RolloutWrite {
                spec: &entry.spec,
                plan: &entry.plan,
                runtime: &rt,
                created: false,
                transition: moved.then_some((entry.rt.state, outcome.reason.as_str())),
            }),
            kill_switch: None,
            bump_version: bump,
            kind: outcome.kind,
            data,
            checks: &[],
        })?;
        tracing::info!(rollout = name, from = %entry.rt.state, to = %rt.state, step = rt.step, weight = rt.weight, reason = %outcome.reason, "{}", outcome.kind);
        entry.rt = rt;
        inner.version = version;
        if moved {
            self.shared.metrics.count_transition(name);
        }
        self.published(inner, event, bump);
        Ok(true)
    }

    /// After a commit: metrics, the event stream, and (when it changed) the snapshot.
    fn published(&self, inner: &Inner, event: Event, snapshot_changed: bool) {
        if let Some(name) = &event.rollout {
            if let Some(e) = inner.rollouts.get(name) {
                self.shared.metrics.set_rollout(name, &e.rt);
            }
        }
        // No subscriber is fine: the store has the event for anyone who comes later.
        let _ = self.shared.events.send(Arc::new(event));
        if snapshot_changed {
            self.shared.metrics.set_version(inner.version);
            self.shared.snapshot.send_replace(Arc::new(inner.publish()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No mutation panics; if one ever did, the store is still the truth.
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs store work off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Controller) -> Result<T, CtlError> + Send + 'static,
    ) -> Result<T, CtlError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| CtlError::Store(StoreError(format!("store task failed: {e}"))))?
    }
}

// === impl Inner ===

impl Inner {
    fn publish(&self) -> Published {
        let doc = SnapshotDoc {
            version: self.version,
            kill_switch: self.kill_switch,
            rollouts: self
                .rollouts
                .values()
                .map(|e| served(&e.spec, &e.rt))
                .collect(),
        };
        Published {
            version: self.version,
            body: Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        }
    }

    fn status(&self, name: &str, now: Millis, with_transitions: bool) -> Result<Status, CtlError> {
        let e = self
            .rollouts
            .get(name)
            .ok_or_else(|| CtlError::NotFound(format!("no rollout named {name:?}")))?;
        let rt = &e.rt;
        let transitions = if with_transitions {
            self.store.transitions(name, RECENT_TRANSITIONS)?
        } else {
            Vec::new()
        };
        Ok(Status {
            name: name.to_owned(),
            state: rt.state,
            step: rt.step,
            steps: e.plan.steps.len(),
            weight: rt.weight,
            mirror: served(&e.spec, rt)
                .mirror
                .map(|m| json!({"cluster": m.cluster, "percent": m.percent})),
            kill_switch: rt.kill_switch,
            at_gate: rt.at_gate(&e.plan),
            remaining_pause_ms: rt.remaining_ms(now),
            step_started_at_ms: rt.step_started_ms,
            step_ends_at_ms: rt.step_ends_ms,
            deadline_at_ms: rt.deadline_ms.filter(|_| !rt.state.is_terminal()),
            deadline_remaining_ms: rt
                .deadline_ms
                .filter(|_| !rt.state.is_terminal())
                .map(|d| (d - now).max(0)),
            now_ms: now,
            transitions,
            spec: e.spec.clone(),
        })
    }
}

/// What the filters are served for a rollout.
fn served(spec: &RolloutSpec, rt: &Runtime) -> RolloutConfig {
    spec.rollout_config(rt.weight, rt.mirror, rt.kill_switch)
}
