//! The rollout controller: owns the store and the live rollouts, applies controls and timers
//! through the state machine, and publishes each change (snapshot, events, metrics).
//!
//! One mutex serializes every mutation, and each runs on the blocking pool, so concurrent
//! controls on a rollout are applied one after another and none is lost.
//!
//! The lifecycle of a service: at most one unfinished rollout per traffic match (creating one
//! whose match overlaps another is refused); a finished rollout (completed, rolled back,
//! aborted, timed out) leaves the snapshot and memory at once and stays in the store as the
//! archive, so the next release of the same service starts clean and routes at once.

use crate::alerts::{Alert, AlertStatus, Webhook};
use crate::analysis::policy::Severity;
use crate::analysis::runner::{self, Run, Target};
use crate::clock::{Millis, SharedClock};
use crate::event::{
    actor, AlertSeen, AnalysisRun, Created, GateRun, KeyChanged, KillSwitch, Moved, Payload,
};
use crate::gate::{Answer, Gate, GateRequest, Gated};
use crate::keys::{KeyInfo, KeySpec, Keyring, StoredKey};
use crate::machine::{self, Control, Illegal, Outcome, Runtime, State};
use crate::metrics::Metrics;
use crate::notify::{Delivery, DeliveryState, ReceiverSpec};
use crate::spec::{Plan, RolloutSpec};
use crate::store::{
    Change, Event, KeyWrite, Loaded, Release, RolloutWrite, Store, StoreError, Transition,
};
use bytes::Bytes;
use linnet_core::config::{MatchConfig, MirrorConfig, RolloutConfig};
use linnet_core::snapshot::Matcher;
use linnet_core::{ConfigError, Epoch, SnapshotDoc};
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

/// How many transitions a status shows.
const RECENT_TRANSITIONS: usize = 20;
/// How many releases a history lists at most.
pub const MAX_HISTORY: usize = 1000;

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
    /// The store's keys in memory, changed under `inner`'s lock with the store.
    keyring: Keyring,
}

struct Inner {
    store: Store,
    /// The unfinished rollouts, by name (a name has at most one).
    rollouts: BTreeMap<String, Entry>,
    version: u64,
    kill_switch: bool,
    /// This run's epoch: `version` counts within it.
    epoch: Epoch,
}

struct Entry {
    /// The release's id in the store.
    id: i64,
    spec: RolloutSpec,
    plan: Plan,
    rt: Runtime,
    created_ms: Millis,
}

/// How a caller names a rollout: by name (its unfinished release, else its latest), or by
/// a release id (all digits; names never are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutRef {
    Name(String),
    Id(i64),
}

/// The snapshot as served, serialized once per version.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub epoch: Epoch,
    pub body: Bytes,
}

#[derive(Debug)]
pub enum CtlError {
    NotFound(String),
    Conflict(String),
    Invalid(ConfigError),
    Store(StoreError),
}

/// What `GET /v1/rollouts/{name}` shows; the CLI reads it back into this type.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    pub name: String,
    /// The release's id: each rollout of a name has its own.
    pub id: i64,
    pub state: State,
    /// Finished rollouts are archived: out of the snapshot, kept in the history.
    pub finished: bool,
    pub created_at_ms: Millis,
    pub finished_at_ms: Option<Millis>,
    pub step: usize,
    pub steps: usize,
    pub weight: f64,
    /// While mirroring: `{cluster, percent}`, the shadow cluster and the share of stable
    /// requests copied to it.
    #[schema(value_type = Option<Object>)]
    pub mirror: Option<MirrorConfig>,
    pub kill_switch: bool,
    /// Waiting at an `until promoted` step.
    pub at_gate: bool,
    /// What holds the rollout besides its pause: a gate's answer, a firing warning alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    pub remaining_pause_ms: Option<Millis>,
    pub step_started_at_ms: Millis,
    pub step_ends_at_ms: Option<Millis>,
    pub deadline_at_ms: Option<Millis>,
    pub deadline_remaining_ms: Option<Millis>,
    pub now_ms: Millis,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// As written, with its secrets redacted: a status is a read.
    pub spec: RolloutSpec,
}

/// A move only its gates hold: what the gate runner asks about.
#[derive(Debug, Clone)]
pub struct GateTarget {
    pub name: String,
    pub id: i64,
    pub to: Gated,
    pub gates: Vec<Gate>,
    /// What each gate is sent (its `gate` filled in per gate).
    pub request: GateRequest,
}

/// What an Alertmanager alert did to a rollout.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertOutcome {
    pub rollout: String,
    pub id: i64,
    pub alert: String,
    pub status: AlertStatus,
    /// `rolled_back`, `held`, `released` or `recorded`.
    pub action: String,
}

/// One past or present release, as `history` lists it (and the CLI reads it).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub id: i64,
    pub name: String,
    #[serde(rename = "match")]
    #[schema(value_type = Object)]
    pub matcher: MatchConfig,
    pub state: State,
    pub step: usize,
    pub weight: f64,
    pub created_at_ms: Millis,
    pub finished_at_ms: Option<Millis>,
    /// Why it is where it is: its last transition's reason.
    pub reason: Option<String>,
}

// === impl Rollouts for Controller ===

/// The analysis runner judges the controller's rollouts and records its runs here.
impl runner::Rollouts for Controller {
    fn now_ms(&self) -> Millis {
        Controller::now_ms(self)
    }

    fn targets(&self) -> runner::Pending<'_, Vec<Target>> {
        Box::pin(async move { self.analysis_targets().await.map_err(|e| e.to_string()) })
    }

    fn record(&self, run: Run) -> runner::Pending<'_, bool> {
        Box::pin(async move { self.record_analysis(run).await.map_err(|e| e.to_string()) })
    }
}

// === impl Recall for Controller ===

/// Analysis sources keep what must outlive a restart in the store. Called on the blocking
/// pool (see the envoy source).
impl crate::analysis::source::Recall for Controller {
    fn recall(&self, key: &str) -> Option<(String, Millis)> {
        match self.lock().store.source_memory(key) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(key, error = %e, "could not read what a source kept");
                None
            }
        }
    }

    fn keep(&self, key: &str, value: &str, at_ms: Millis) {
        if let Err(e) = self.lock().store.remember_for_source(key, value, at_ms) {
            tracing::warn!(key, error = %e, "could not keep what a source needs after a restart");
        }
    }
}

// === impl RolloutRef ===

impl RolloutRef {
    pub fn parse(s: &str) -> RolloutRef {
        match s.parse::<i64>() {
            Ok(id) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => RolloutRef::Id(id),
            _ => RolloutRef::Name(s.to_owned()),
        }
    }
}

impl std::fmt::Display for RolloutRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloutRef::Name(n) => write!(f, "{n:?}"),
            RolloutRef::Id(id) => write!(f, "id {id}"),
        }
    }
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
        let keyring = Keyring::new(&store.keys()?);
        let Loaded {
            version,
            kill_switch,
            rollouts,
        } = store.load()?;
        let mut map = BTreeMap::new();
        for r in rollouts {
            let entry = Entry::from_release(r)?;
            metrics.set_rollout(&entry.spec, &entry.rt);
            map.insert(entry.spec.name.clone(), entry);
        }
        let inner = Inner {
            store,
            rollouts: map,
            version,
            kill_switch,
            epoch: crate::epoch::draw(),
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
                keyring,
            }),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The keys requests may present.
    pub fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Makes a key; its secret is in the answer and nowhere else, ever. `by`: who makes it.
    pub async fn create_key(
        &self,
        spec: KeySpec,
        by: String,
    ) -> Result<(KeyInfo, String), CtlError> {
        spec.validate().map_err(CtlError::Invalid)?;
        let secret = crate::keys::new_secret().map_err(|e| CtlError::Store(StoreError(e)))?;
        self.blocking(move |c| {
            let now = c.now_ms();
            let key = StoredKey {
                name: spec.name,
                scope: spec.scope,
                hash: crate::keys::hash(&secret),
                rate: spec.rate,
                burst: spec.burst,
                created_ms: now,
                revoked_ms: None,
            };
            let mut inner = c.lock();
            if inner.store.keys()?.iter().any(|k| k.name == key.name) {
                return Err(CtlError::Conflict(format!(
                    "a key named {:?} exists or existed; names of revoked keys are not used again, so the audit stays unambiguous",
                    key.name
                )));
            }
            let payload = Payload::Key(KeyChanged {
                action: "created".into(),
                name: key.name.clone(),
                scope: key.scope,
                reason: format!("key {:?} ({}) created by {by}", key.name, key.scope),
            });
            c.commit_key(&mut inner, payload, &by, KeyWrite::Insert(&key), now)?;
            c.shared.keyring.put(&key);
            Ok((key.info(), secret))
        })
        .await
    }

    /// Every key, revoked ones included; no secret, no hash.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>, CtlError> {
        self.blocking(|c| Ok(c.lock().store.keys()?.iter().map(StoredKey::info).collect()))
            .await
    }

    /// Revokes a key: refused from the next request on. `by`: who revokes it.
    pub async fn revoke_key(&self, name: String, by: String) -> Result<KeyInfo, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let mut key = inner
                .store
                .keys()?
                .into_iter()
                .find(|k| k.name == name)
                .ok_or_else(|| CtlError::NotFound(format!("no key named {name:?}")))?;
            if key.revoked_ms.is_some() {
                return Err(CtlError::Conflict(format!(
                    "key {name:?} is already revoked"
                )));
            }
            let payload = Payload::Key(KeyChanged {
                action: "revoked".into(),
                name: name.clone(),
                scope: key.scope,
                reason: format!("key {name:?} ({}) revoked by {by}", key.scope),
            });
            c.commit_key(&mut inner, payload, &by, KeyWrite::Revoke(&name), now)?;
            key.revoked_ms = Some(now);
            c.shared.keyring.put(&key);
            Ok(key.info())
        })
        .await
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

    /// `by`: who creates it, as the audit names them (a key's name).
    pub async fn create(
        &self,
        spec: RolloutSpec,
        plan: Plan,
        by: String,
    ) -> Result<Status, CtlError> {
        self.blocking(move |c| c.create_now(spec, plan, &by)).await
    }

    /// `by`: who applies it, as the audit names them (a key's name).
    pub async fn control(
        &self,
        rollout: RolloutRef,
        control: Control,
        by: String,
    ) -> Result<Status, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let name = match inner.live_name(&rollout) {
                Some(name) => name,
                None => {
                    // A finished rollout: only a retry brings it back; anything else is refused
                    // by the state machine with the state named.
                    let release = inner.archived(&rollout)?;
                    let entry = Entry::from_release(release)?;
                    entry.rt.apply(&entry.plan, &control, now)?;
                    if control != Control::Retry {
                        return Err(CtlError::Conflict(format!(
                            "rollout {:?} (id {}) is {} and archived",
                            entry.spec.name, entry.id, entry.rt.state
                        )));
                    }
                    inner.may_retry(&entry)?;
                    let name = entry.spec.name.clone();
                    inner.rollouts.insert(name.clone(), entry);
                    name
                }
            };
            let id = inner.rollouts.get(&name).map_or(0, |e| e.id);
            // A control may make a step due at once (e.g. resume with nothing left).
            if let Err(e) = c.settle(&mut inner, &name, Some(&control), &by, now) {
                // A retry that did not happen leaves the rollout in the archive.
                if inner
                    .rollouts
                    .get(&name)
                    .is_some_and(|e| e.rt.state.is_finished())
                {
                    inner.rollouts.remove(&name);
                }
                return Err(e);
            }
            c.shared.wake.notify_one();
            inner.status(&RolloutRef::Id(id), now, true)
        })
        .await
    }

    pub async fn status(&self, rollout: RolloutRef) -> Result<Status, CtlError> {
        self.blocking(move |c| c.lock().status(&rollout, c.now_ms(), true))
            .await
    }

    /// The unfinished rollouts.
    pub async fn list(&self) -> Result<Vec<Status>, CtlError> {
        self.blocking(|c| {
            let inner = c.lock();
            let now = c.now_ms();
            inner
                .rollouts
                .values()
                .map(|e| Ok(e.status(now, Vec::new(), None)))
                .collect()
        })
        .await
    }

    /// Every release, newest first: of one name, and/or whose match overlaps a host.
    pub async fn history(
        &self,
        name: Option<String>,
        host: Option<String>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, CtlError> {
        let host = match host {
            None => None,
            Some(h) => Some(Matcher::new(Some(&h), None).map_err(|(_, m)| {
                CtlError::Invalid(ConfigError {
                    field: "match".into(),
                    message: m,
                })
            })?),
        };
        self.blocking(move |c| {
            let inner = c.lock();
            let mut out = Vec::new();
            // The name and the limit are the store's to apply; the overlap with a host is not.
            let fetch = if host.is_some() { usize::MAX } else { limit };
            for r in inner.store.history(name.as_deref(), fetch)? {
                if out.len() >= limit {
                    break;
                }
                if let Some(h) = &host {
                    if !matcher(&r.spec.matcher).is_ok_and(|m| m.overlaps(h)) {
                        continue;
                    }
                }
                let reason = inner.store.transitions(r.id, 1)?.pop().map(|t| t.reason);
                out.push(HistoryEntry {
                    id: r.id,
                    name: r.spec.name,
                    matcher: r.spec.matcher,
                    state: r.runtime.state,
                    step: r.runtime.step,
                    weight: r.runtime.weight,
                    created_at_ms: r.created_ms,
                    finished_at_ms: r.finished_ms,
                    reason,
                });
            }
            Ok(out)
        })
        .await
    }

    pub async fn kill_switch(&self) -> Result<bool, CtlError> {
        self.blocking(|c| Ok(c.lock().kill_switch)).await
    }

    pub async fn set_kill_switch(&self, on: bool, by: String) -> Result<bool, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            if inner.kill_switch == on {
                return Ok(on);
            }
            let reason = format!(
                "global kill switch {} by operator",
                if on { "on" } else { "off" }
            );
            let (event, version) = inner.store.commit(Change {
                at_ms: c.now_ms(),
                rollout: None,
                kill_switch: Some(on),
                bump_version: true,
                payload: Payload::KillSwitch(KillSwitch { on, reason }),
                actor: &by,
                key: None,
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

    /// The id of the newest event (0 before any): where a stream that wants only what comes
    /// next starts.
    pub async fn last_event_id(&self) -> Result<i64, CtlError> {
        self.blocking(|c| Ok(c.lock().store.last_event_id()?)).await
    }

    /// A release's evidence report, from its audit trail (see [`crate::report`]).
    pub async fn report(&self, rollout: RolloutRef) -> Result<crate::report::Report, CtlError> {
        self.blocking(move |c| {
            let inner = c.lock();
            let now = c.now_ms();
            let status = inner.status(&rollout, now, false)?;
            let mut events = inner
                .store
                .latest_events(status.id, crate::report::MAX_EVENTS + 1)?;
            let truncated = events.len() > crate::report::MAX_EVENTS;
            if truncated {
                events.remove(0);
            }
            let transitions = inner.store.transitions(status.id, usize::MAX)?;
            Ok(crate::report::build(
                status,
                &events,
                transitions,
                truncated,
                now,
            ))
        })
        .await
    }

    /// Prunes the audit by the retention policy (see [`Store::prune`]).
    pub async fn prune(
        &self,
        before_ms: Millis,
        max_rows: u64,
    ) -> Result<crate::store::Pruned, CtlError> {
        self.blocking(move |c| Ok(c.lock().store.prune(before_ms, max_rows)?))
            .await
    }

    /// Readiness: the store answers.
    pub async fn ping(&self) -> Result<(), CtlError> {
        self.blocking(|c| Ok(c.lock().store.ping()?)).await
    }

    /// The snapshot version and how many rollouts and events there are, read together: what
    /// tests compare to show that a refused request changed nothing.
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
                    // Paused by anyone, or held at a manual weight, users are still on the
                    // canary: the guardrails keep judging, and a critical failure rolls back.
                    let judged = matches!(
                        e.rt.state,
                        State::Progressing | State::Shadowing | State::Paused
                    );
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
                        id: e.id,
                        analysis: analysis.clone(),
                        plan: e.plan.clone(),
                        shadow,
                        clusters: e.spec.clusters.clone(),
                        rt: e.rt.clone(),
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
            let Some(entry) = inner.rollouts.get(&run.name).filter(|e| e.id == run.id) else {
                // Finished while the run was out: nothing left to act on.
                return Ok(false);
            };
            if entry.rt != run.was {
                return Ok(false);
            }
            let rt = run.step.judged.clone();
            let (action, reason) = (run.step.decision.action, &run.step.decision.reason);
            let payload = Payload::Analysis(AnalysisRun {
                step: rt.step,
                weight: rt.weight,
                subject: run.subject.to_owned(),
                decision: action,
                reason: reason.clone(),
                checks: run.step.checks.clone(),
                observed: run.observed,
            });
            tracing::info!(rollout = %run.name, decision = action.as_str(), %reason, "analysis");
            c.commit_runtime(&mut inner, &run.name, rt, payload, actor::ANALYSIS, now)?;
            c.shared.metrics.count_analysis(&run.name, action.as_str());
            // The decision's control, and any step that enough passes made due.
            for (next, outcome) in run.transitions {
                c.commit_transition(&mut inner, &run.name, next, &outcome, actor::ANALYSIS, now)?;
            }
            // Anything that fell due since the run began.
            c.advance(&mut inner, &run.name, now)?;
            c.shared.wake.notify_one();
            Ok(true)
        })
        .await
    }

    /// The rollouts whose next move is due and only their gates hold it.
    pub async fn gate_targets(&self) -> Result<Vec<GateTarget>, CtlError> {
        self.blocking(|c| {
            let inner = c.lock();
            let now = c.now_ms();
            Ok(inner
                .rollouts
                .values()
                .filter_map(|e| {
                    let to = e.rt.gate_due(&e.plan, now)?;
                    Some(GateTarget {
                        name: e.spec.name.clone(),
                        id: e.id,
                        to,
                        gates: e.plan.gates_on(to.on()).cloned().collect(),
                        request: GateRequest {
                            gate: String::new(),
                            on: to.on(),
                            rollout: e.spec.name.clone(),
                            rollout_id: e.id,
                            state: e.rt.state,
                            step: e.rt.step,
                            weight: e.rt.weight,
                            next_step: match to {
                                Gated::Start => Some(0),
                                Gated::Step(i) => Some(i),
                                Gated::Promotion => None,
                            },
                            at_ms: now,
                        },
                    })
                })
                .collect())
        })
        .await
    }

    /// Records the answers of a move's gates (in order; the first that held ends them), then
    /// makes the move they let, or holds, or rolls back once `gate_failures` answers in a row
    /// held. `Ok(false)`: the move is no longer due (an operator or analysis moved first).
    pub async fn record_gate(
        &self,
        target: GateTarget,
        answers: Vec<Answer>,
    ) -> Result<bool, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let Some(entry) = inner
                .rollouts
                .get(&target.name)
                .filter(|e| e.id == target.id)
            else {
                return Ok(false);
            };
            if entry.rt.gate_due(&entry.plan, now) != Some(target.to) {
                return Ok(false);
            }
            let limit = entry.plan.gate_failures;
            let on = target.to.on();
            let mut rt = entry.rt.clone();
            let held = answers.iter().find(|a| !a.passed);
            let reason = match held {
                None => {
                    rt.holds.passed = Some(target.to);
                    rt.holds.failures = 0;
                    rt.holds.gate = None;
                    let said: Vec<String> = answers
                        .iter()
                        .map(|a| format!("{} answered {}", a.gate, a.answer))
                        .collect();
                    format!("gates {on} let {}: {}", target.to.words(), said.join("; "))
                }
                Some(a) => {
                    rt.holds.failures = rt.holds.failures.saturating_add(1);
                    let of = if limit == 0 {
                        String::new()
                    } else {
                        format!(" of {limit}")
                    };
                    let why = format!(
                        "gate {} ({on}) holds {}: {} (failure {}{of})",
                        a.gate,
                        target.to.words(),
                        a.answer,
                        rt.holds.failures
                    );
                    rt.holds.gate = Some(why.clone());
                    why
                }
            };
            let failures = rt.holds.failures;
            let rollback = held.filter(|_| limit > 0 && failures >= limit).map(|a| {
                format!(
                    "gate {} ({on}) held {} {failures} times in a row: {}",
                    a.gate,
                    target.to.words(),
                    a.answer
                )
            });
            let payload = Payload::Gate(GateRun {
                on,
                step: rt.step,
                to: target.to,
                passed: held.is_none(),
                answers,
                failures,
                limit,
                reason,
            });
            c.commit_runtime(&mut inner, &target.name, rt, payload, actor::GATE, now)?;
            // The move the gates let (or the rollback they caused) is theirs.
            let rollback = rollback.map(Control::RollBack);
            c.settle(
                &mut inner,
                &target.name,
                rollback.as_ref(),
                actor::GATE,
                now,
            )?;
            c.shared.wake.notify_one();
            Ok(true)
        })
        .await
    }

    /// Stores the deliveries of new events, then returns the deliveries due now (each
    /// receiver's oldest waiting one).
    pub async fn outbox(&self, limit: usize) -> Result<Vec<Delivery>, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            crate::notify::enqueue(&mut inner.store, now)?;
            c.shared
                .metrics
                .set_notifications_waiting(inner.store.waiting_deliveries()?);
            Ok(inner.store.due_deliveries(now, limit)?)
        })
        .await
    }

    /// Records an attempt to deliver `d`: delivered, to be retried, or given up.
    pub async fn delivery_attempted(
        &self,
        d: Delivery,
        result: Result<(), String>,
    ) -> Result<(), CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let attempts = d.attempts.saturating_add(1);
            let (state, next, error) = match &result {
                Ok(()) => (DeliveryState::Delivered, now, None),
                Err(e) => match crate::notify::retry_at(&d, attempts, now) {
                    Some(at) => (DeliveryState::Retrying, at, Some(e.as_str())),
                    None => (DeliveryState::Failed, now, Some(e.as_str())),
                },
            };
            if let Err(e) = &result {
                tracing::warn!(receiver = %d.receiver, attempt = attempts, error = %e,
                    state = state.as_str(), "a notification was not delivered");
            }
            c.shared.metrics.count_notification(state.as_str());
            inner.store.attempted(d.id, state, next, error, now)?;
            Ok(())
        })
        .await
    }

    /// Stored deliveries, newest first.
    pub async fn notifications(
        &self,
        rollout: Option<String>,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, CtlError> {
        self.blocking(move |c| {
            let mut list = c
                .lock()
                .store
                .deliveries(rollout.as_deref(), state, limit)?;
            for d in &mut list {
                d.url = crate::notify::shown_url(&d.url);
            }
            Ok(list)
        })
        .await
    }

    /// Sends a failed delivery again, from its first attempt, under its idempotency key.
    pub async fn resend(&self, id: i64) -> Result<Delivery, CtlError> {
        self.blocking(move |c| {
            let now = c.now_ms();
            let mut inner = c.lock();
            let missing = || CtlError::NotFound(format!("no delivery with id {id}"));
            let d = inner.store.delivery(id)?.ok_or_else(missing)?;
            if d.state != DeliveryState::Failed {
                return Err(CtlError::Conflict(format!(
                    "delivery {id} is {}: only a failed one is sent again",
                    d.state.as_str()
                )));
            }
            inner.store.resend(id, now)?;
            let mut d = inner.store.delivery(id)?.ok_or_else(missing)?;
            d.url = crate::notify::shown_url(&d.url);
            Ok(d)
        })
        .await
    }

    /// The global receivers, secrets redacted.
    pub async fn receivers(&self) -> Result<Vec<ReceiverSpec>, CtlError> {
        self.blocking(|c| Ok(crate::notify::redact_all(&c.lock().store.receivers()?)))
            .await
    }

    /// Adds or replaces a global receiver; `true` when it replaced one.
    pub async fn put_receiver(&self, spec: ReceiverSpec) -> Result<bool, CtlError> {
        spec.validate("receiver").map_err(CtlError::Invalid)?;
        self.blocking(move |c| {
            let now = c.now_ms();
            let mut inner = c.lock();
            // Events before it are not its business: bring the outbox up to now first.
            crate::notify::enqueue(&mut inner.store, now)?;
            Ok(inner.store.put_receiver(&spec, now)?)
        })
        .await
    }

    pub async fn delete_receiver(&self, name: String) -> Result<(), CtlError> {
        self.blocking(move |c| {
            if c.lock().store.delete_receiver(&name)? {
                Ok(())
            } else {
                Err(CtlError::NotFound(format!("no receiver named {name:?}")))
            }
        })
        .await
    }

    /// Acts on Alertmanager's alerts: each live rollout whose selectors match one is rolled
    /// back (critical) or held while it fires (warning); every match is recorded.
    /// `by`: the key Alertmanager calls with, as the audit names it.
    pub async fn alerts(&self, hook: Webhook, by: String) -> Result<Vec<AlertOutcome>, CtlError> {
        self.blocking(move |c| {
            let mut inner = c.lock();
            let now = c.now_ms();
            let mut out = Vec::new();
            for alert in &hook.alerts {
                let matched: Vec<(String, Severity)> = inner
                    .rollouts
                    .values()
                    .filter_map(|e| {
                        let sev = e
                            .spec
                            .alerts
                            .iter()
                            .filter(|s| s.matches(alert))
                            .map(|s| s.severity)
                            .min_by_key(|s| *s != Severity::Critical)?;
                        Some((e.spec.name.clone(), sev))
                    })
                    .collect();
                for (name, severity) in matched {
                    if let Some(o) = c.alert_one(&mut inner, &name, alert, severity, &by, now)? {
                        out.push(o);
                    }
                }
            }
            c.shared.wake.notify_one();
            Ok(out)
        })
        .await
    }

    fn alert_one(
        &self,
        inner: &mut Inner,
        name: &str,
        alert: &Alert,
        severity: Severity,
        by: &str,
        now: Millis,
    ) -> Result<Option<AlertOutcome>, CtlError> {
        let Some(entry) = inner.rollouts.get(name) else {
            return Ok(None);
        };
        let id = entry.id;
        let key = alert.key();
        let reason = alert.reason();
        let mut rt = entry.rt.clone();
        let held = rt.holds.alerts.contains_key(&key);
        let action = match (alert.status, severity) {
            (AlertStatus::Firing, Severity::Critical) => "rolled_back",
            // Alertmanager repeats a firing alert: the hold is there already.
            (AlertStatus::Firing, Severity::Warning) if held => return Ok(None),
            (AlertStatus::Firing, Severity::Warning) => {
                rt.holds.alerts.insert(key.clone(), reason.clone());
                "held"
            }
            (AlertStatus::Resolved, _) if held => {
                rt.holds.alerts.remove(&key);
                "released"
            }
            (AlertStatus::Resolved, _) => "recorded",
        };
        let payload = Payload::Alert(AlertSeen {
            alert: alert.name().to_owned(),
            status: alert.status,
            severity,
            key,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            action: action.to_owned(),
            reason: reason.clone(),
        });
        self.commit_runtime(inner, name, rt, payload, by, now)?;
        if action == "rolled_back" {
            self.settle(inner, name, Some(&Control::RollBack(reason)), by, now)?;
        } else {
            self.advance(inner, name, now)?;
        }
        Ok(Some(AlertOutcome {
            rollout: name.to_owned(),
            id,
            alert: alert.name().to_owned(),
            status: alert.status,
            action: action.to_owned(),
        }))
    }

    /// Commits an event of a live rollout that changes its runtime but is no transition.
    fn commit_runtime(
        &self,
        inner: &mut Inner,
        name: &str,
        rt: Runtime,
        payload: Payload,
        by: &str,
        now: Millis,
    ) -> Result<(), CtlError> {
        let Inner {
            store, rollouts, ..
        } = &mut *inner;
        let entry = rollouts
            .get_mut(name)
            .ok_or_else(|| CtlError::NotFound(format!("no rollout named {name:?}")))?;
        let (event, _) = store.commit(Change {
            at_ms: now,
            rollout: Some(RolloutWrite {
                id: Some(entry.id),
                spec: &entry.spec,
                plan: &entry.plan,
                runtime: &rt,
                transition: None,
            }),
            kill_switch: None,
            bump_version: false,
            payload,
            actor: by,
            key: None,
        })?;
        self.shared.metrics.set_rollout(&entry.spec, &rt);
        entry.rt = rt;
        self.published(inner, event, false);
        Ok(())
    }

    /// A release's status and its latest `limit` events, oldest first: its timeline.
    pub async fn timeline(
        &self,
        rollout: RolloutRef,
        limit: usize,
    ) -> Result<(Status, Vec<Event>), CtlError> {
        self.blocking(move |c| {
            let inner = c.lock();
            let status = inner.status(&rollout, c.now_ms(), false)?;
            let events = inner.store.latest_events(status.id, limit)?;
            Ok((status, events))
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

    fn create_now(&self, spec: RolloutSpec, plan: Plan, by: &str) -> Result<Status, CtlError> {
        let mut inner = self.lock();
        let name = spec.name.clone();
        if let Some(e) = inner.rollouts.get(&name) {
            return Err(CtlError::Conflict(format!(
                "a rollout named {name:?} (id {}) is {}; {}",
                e.id,
                e.rt.state,
                finish_it_first(&name, e.rt.state)
            )));
        }
        inner.refuse_overlap(&spec, None)?;
        let now = self.now_ms();
        let rt = Runtime::new(&plan, now);
        let payload = Payload::Created(Created {
            state: rt.state,
            steps: plan.steps.len(),
            reason: "created by operator".into(),
        });
        let (event, version) = inner.store.commit(Change {
            at_ms: now,
            rollout: Some(RolloutWrite {
                id: None,
                spec: &spec,
                plan: &plan,
                runtime: &rt,
                transition: None,
            }),
            kill_switch: None,
            bump_version: true,
            payload,
            actor: by,
            key: None,
        })?;
        let id = event
            .rollout_id
            .ok_or_else(|| StoreError("a created rollout got no id".into()))?;
        inner.version = version;
        self.shared.metrics.set_rollout(&spec, &rt);
        inner.rollouts.insert(
            name.clone(),
            Entry {
                id,
                spec,
                plan,
                rt,
                created_ms: now,
            },
        );
        self.published(&inner, event, true);
        // Enter the first step at once, as its own recorded transition, by the creator.
        self.settle(&mut inner, &name, None, by, now)?;
        self.shared.wake.notify_one();
        inner.status(&RolloutRef::Id(id), now, true)
    }

    /// Ticks one rollout until nothing more is due (pause-0 steps pass in one go): the
    /// schedule's moves (and the deadline's).
    fn advance(&self, inner: &mut Inner, name: &str, now: Millis) -> Result<(), CtlError> {
        self.settle(inner, name, None, actor::SCHEDULE, now)
    }

    /// Applies a control and what it makes due, committing each transition in order, each
    /// by `by` but a timeout, which is always the deadline's.
    fn settle(
        &self,
        inner: &mut Inner,
        name: &str,
        control: Option<&Control>,
        by: &str,
        now: Millis,
    ) -> Result<(), CtlError> {
        let Some(entry) = inner.rollouts.get(name) else {
            // Finished (and archived) by an earlier transition: nothing more is due.
            return Ok(());
        };
        let chain = machine::settle(&entry.plan, &entry.rt, control, now)?;
        for (rt, outcome) in chain {
            let by = if outcome.kind == machine::Move::TimedOut {
                actor::DEADLINE
            } else {
                by
            };
            self.commit_transition(inner, name, rt, &outcome, by, now)?;
        }
        Ok(())
    }

    /// Commits one transition of a live rollout: store, metrics, events, snapshot.
    fn commit_transition(
        &self,
        inner: &mut Inner,
        name: &str,
        rt: Runtime,
        outcome: &Outcome,
        by: &str,
        now: Millis,
    ) -> Result<(), CtlError> {
        let Inner {
            store, rollouts, ..
        } = &mut *inner;
        let entry = rollouts
            .get_mut(name)
            .ok_or_else(|| CtlError::NotFound(format!("no rollout named {name:?}")))?;
        // A finished rollout leaves the snapshot.
        let bump =
            rt.state.is_finished() || served(&entry.spec, &entry.rt) != served(&entry.spec, &rt);
        let moved = entry.rt.state != rt.state || entry.rt.step != rt.step;
        let payload = Payload::Moved(
            outcome.kind,
            Moved {
                from: entry.rt.state,
                to: rt.state,
                step: rt.step,
                weight: rt.weight,
                mirror: rt.mirror,
                kill_switch: rt.kill_switch,
                reason: outcome.reason.clone(),
            },
        );
        let (event, version) = store.commit(Change {
            at_ms: now,
            rollout: Some(RolloutWrite {
                id: Some(entry.id),
                spec: &entry.spec,
                plan: &entry.plan,
                runtime: &rt,
                transition: moved.then_some((entry.rt.state, outcome.reason.as_str())),
            }),
            kill_switch: None,
            bump_version: bump,
            payload,
            actor: by,
            key: None,
        })?;
        tracing::info!(rollout = name, from = %entry.rt.state, to = %rt.state, step = rt.step, weight = rt.weight, reason = %outcome.reason, "{}", outcome.kind);
        self.shared.metrics.set_rollout(&entry.spec, &rt);
        let finished = rt.state.is_finished();
        entry.rt = rt;
        inner.version = version;
        if finished {
            // Archived: the store has it; the snapshot and the live set no longer do.
            inner.rollouts.remove(name);
        }
        if moved {
            self.shared.metrics.count_transition(name);
        }
        self.published(inner, event, bump);
        Ok(())
    }

    /// Commits a key's change and its event (no rollout, no snapshot change).
    fn commit_key(
        &self,
        inner: &mut Inner,
        payload: Payload,
        by: &str,
        key: KeyWrite<'_>,
        now: Millis,
    ) -> Result<(), CtlError> {
        let (event, _) = inner.store.commit(Change {
            at_ms: now,
            rollout: None,
            kill_switch: None,
            bump_version: false,
            payload,
            actor: by,
            key: Some(key),
        })?;
        self.published(inner, event, false);
        Ok(())
    }

    /// After a commit: the event stream, and (when it changed) the snapshot.
    fn published(&self, inner: &Inner, event: Event, snapshot_changed: bool) {
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
            epoch: Some(self.epoch.clone()),
            kill_switch: self.kill_switch,
            rollouts: self
                .rollouts
                .values()
                .map(|e| served(&e.spec, &e.rt))
                .collect(),
        };
        Published {
            version: self.version,
            epoch: self.epoch.clone(),
            body: Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        }
    }

    /// The name of the unfinished rollout `r` names, if it names one.
    fn live_name(&self, r: &RolloutRef) -> Option<String> {
        match r {
            RolloutRef::Name(n) => self.rollouts.contains_key(n).then(|| n.clone()),
            RolloutRef::Id(id) => self
                .rollouts
                .values()
                .find(|e| e.id == *id)
                .map(|e| e.spec.name.clone()),
        }
    }

    /// A finished release from the store: by id, or a name's latest.
    fn archived(&self, r: &RolloutRef) -> Result<Release, CtlError> {
        let found = match r {
            RolloutRef::Name(n) => self.store.latest_release(n)?,
            RolloutRef::Id(id) => self.store.release(*id)?,
        };
        found.ok_or_else(|| CtlError::NotFound(format!("no rollout with {}", ref_words(r))))
    }

    fn status(
        &self,
        r: &RolloutRef,
        now: Millis,
        with_transitions: bool,
    ) -> Result<Status, CtlError> {
        let transitions = |id| -> Result<Vec<Transition>, CtlError> {
            Ok(if with_transitions {
                self.store.transitions(id, RECENT_TRANSITIONS)?
            } else {
                Vec::new()
            })
        };
        if let Some(e) = self.live_name(r).and_then(|n| self.rollouts.get(&n)) {
            return Ok(e.status(now, transitions(e.id)?, None));
        }
        let release = self.archived(r)?;
        let finished = release.finished_ms;
        let entry = Entry::from_release(release)?;
        Ok(entry.status(now, transitions(entry.id)?, finished))
    }

    /// A retried rollout becomes unfinished again: only as its name's latest release, and
    /// only if no unfinished rollout has taken its traffic since.
    fn may_retry(&self, entry: &Entry) -> Result<(), CtlError> {
        let name = &entry.spec.name;
        if let Some(latest) = self.store.latest_release(name)? {
            if latest.id != entry.id {
                return Err(CtlError::Conflict(format!(
                    "cannot retry rollout {name:?} id {}: id {} is a later release of that name; create a new rollout instead",
                    entry.id, latest.id
                )));
            }
        }
        self.refuse_overlap(&entry.spec, Some(entry.id))
    }

    /// At most one unfinished rollout per traffic match.
    fn refuse_overlap(&self, spec: &RolloutSpec, except: Option<i64>) -> Result<(), CtlError> {
        let mine = matcher(&spec.matcher).map_err(CtlError::Invalid)?;
        for e in self.rollouts.values().filter(|e| Some(e.id) != except) {
            let Ok(theirs) = matcher(&e.spec.matcher) else {
                continue;
            };
            if mine.overlaps(&theirs) {
                return Err(CtlError::Conflict(format!(
                    "rollout {:?} (id {}, {}) matches {}, which overlaps {} of {:?}: at most one unfinished rollout per traffic match; {}",
                    e.spec.name,
                    e.id,
                    e.rt.state,
                    describe_match(&e.spec.matcher),
                    describe_match(&spec.matcher),
                    spec.name,
                    finish_it_first(&e.spec.name, e.rt.state)
                )));
            }
        }
        Ok(())
    }
}

// === impl Entry ===

impl Entry {
    fn from_release(r: Release) -> Result<Entry, StoreError> {
        // A stored spec was valid when written; if the rules have tightened since, say so.
        let plan = r.spec.validate().map_err(|e| {
            StoreError(format!(
                "stored rollout {:?} (id {}): {e}",
                r.spec.name, r.id
            ))
        })?;
        Ok(Entry {
            id: r.id,
            spec: r.spec,
            plan,
            rt: r.runtime,
            created_ms: r.created_ms,
        })
    }

    fn status(
        &self,
        now: Millis,
        transitions: Vec<Transition>,
        finished_at: Option<Millis>,
    ) -> Status {
        let rt = &self.rt;
        let stepping = !rt.state.is_done_stepping();
        Status {
            name: self.spec.name.clone(),
            id: self.id,
            state: rt.state,
            finished: rt.state.is_finished(),
            created_at_ms: self.created_ms,
            finished_at_ms: finished_at,
            step: rt.step,
            steps: self.plan.steps.len(),
            weight: rt.weight,
            mirror: served(&self.spec, rt).mirror,
            kill_switch: rt.kill_switch,
            at_gate: rt.at_gate(&self.plan),
            held_by: rt.held_by().filter(|_| stepping),
            remaining_pause_ms: rt.remaining_ms(now).filter(|_| stepping),
            step_started_at_ms: rt.step_started_ms,
            step_ends_at_ms: rt.step_ends_ms,
            deadline_at_ms: rt.deadline_ms.filter(|_| stepping),
            deadline_remaining_ms: rt
                .deadline_ms
                .filter(|_| stepping)
                .map(|d| (d - now).max(0)),
            now_ms: now,
            transitions,
            spec: self.spec.redacted(),
        }
    }
}

fn matcher(m: &MatchConfig) -> Result<Matcher, ConfigError> {
    Matcher::new(m.authority.as_deref(), m.path_prefix.as_deref()).map_err(|(field, message)| {
        ConfigError {
            field: format!("match.{field}"),
            message,
        }
    })
}

/// `checkout.local`, `checkout.local under /api`, `any host`.
fn describe_match(m: &MatchConfig) -> String {
    let host = m
        .authority
        .as_deref()
        .filter(|a| *a != "*")
        .map_or("any host".to_owned(), |a| format!("host {a}"));
    match &m.path_prefix {
        Some(p) => format!("{host} under {p}"),
        None => host,
    }
}

/// What to do about an unfinished rollout in the way.
fn finish_it_first(name: &str, state: State) -> String {
    if state == State::Promoted {
        format!("complete it first (`linnet rollout complete {name}`) once stable runs its version, or abort it")
    } else {
        format!("wait for it to finish, or abort it (`linnet rollout abort {name}`)")
    }
}

fn ref_words(r: &RolloutRef) -> String {
    match r {
        RolloutRef::Name(n) => format!("the name {n:?}"),
        RolloutRef::Id(id) => format!("id {id}"),
    }
}

/// What the filters are served for a rollout.
fn served(spec: &RolloutSpec, rt: &Runtime) -> RolloutConfig {
    spec.rollout_config(rt.weight, rt.mirror, rt.kill_switch)
}
