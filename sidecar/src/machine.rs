//! The rollout state machine: pure functions from (plan, runtime, control, now) to the next
//! runtime, with no I/O, so every transition is tested without a store or a clock.

use crate::analysis::Memory;
use crate::clock::{millis, Millis};
use crate::gate::Gated;
use crate::spec::{Pause, Plan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Created; the first step has not been entered yet.
    Pending,
    /// The current step mirrors while no user is on the canary.
    Shadowing,
    Progressing,
    /// Automatic stepping is stopped: by an operator, by a manual weight, or by analysis for
    /// lack of data. Analysis lifts only a pause of its own, never an operator's, and does not
    /// pause a rollout an operator already holds.
    Paused,
    /// At 100%, still in the snapshot, until stable runs the promoted version (`Complete`).
    Promoted,
    /// Handed over: stable runs the promoted version. Finished, archived.
    Completed,
    RolledBack,
    Aborted,
    TimedOut,
}

/// Where a rollout is. Times are absolute, so a restart resumes with the pause it had left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runtime {
    pub state: State,
    /// Index of the current step.
    pub step: usize,
    /// Canary share in percent, as served to the filters.
    pub weight: f64,
    /// Mirror share in percent, when mirroring.
    pub mirror: Option<f64>,
    pub kill_switch: bool,
    pub step_started_ms: Millis,
    /// When the current step's pause ends; once promoted, when `complete_after` completes it.
    /// `None`: a manual gate, paused, or finished.
    pub step_ends_ms: Option<Millis>,
    /// While paused: what was left of the step's pause (`None`: a manual gate).
    pub paused_remaining_ms: Option<Millis>,
    pub deadline_ms: Option<Millis>,
    /// What analysis remembers: passes in this step, failures, evidence.
    pub analysis: Memory,
    /// What holds the timer's next move: gates that have not let it, firing warning alerts.
    pub holds: Holds,
}

/// What holds a rollout where it is, besides its pause and analysis.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Holds {
    /// The move whose gates all answered 2xx: the timer may make it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<Gated>,
    /// Failed gate answers in a row for the move now due.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// The last failed answer: why the rollout is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// Firing warning alerts, by key: each holds stepping until it resolves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub alerts: BTreeMap<String, String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An operator's command, an analysis decision, or the controller's own tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Pause,
    Resume,
    Promote {
        full: bool,
    },
    Abort,
    Retry,
    /// Stable now runs the promoted version: the rollout leaves the snapshot.
    Complete,
    SetWeight(f64),
    KillSwitch(bool),
    /// Analysis found the canary bad.
    RollBack(String),
    /// Analysis has had no data for too long: stop stepping, and say why.
    AnalysisPause(String),
    /// Data is back after an analysis pause.
    AnalysisResume(String),
    /// Time passed: start, advance a step, or time out.
    Tick,
}

/// What a transition did, for the audit log and the event stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub kind: Move,
    pub reason: String,
}

/// What kind of transition a rollout made: the audit event's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Entered step 0.
    Started,
    /// Entered the next step (its pause elapsed, or promoted by an operator).
    Step,
    Paused,
    Resumed,
    Promoted,
    /// An operator set the weight by hand.
    Weight,
    /// The rollout's own kill switch was thrown.
    KillSwitch,
    Aborted,
    RolledBack,
    Retried,
    Completed,
    TimedOut,
}

/// A control that the rollout's state does not allow (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Illegal(pub String);

// === impl State ===

impl State {
    pub const ALL: [State; 9] = [
        State::Pending,
        State::Shadowing,
        State::Progressing,
        State::Paused,
        State::Promoted,
        State::Completed,
        State::RolledBack,
        State::Aborted,
        State::TimedOut,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Shadowing => "shadowing",
            State::Progressing => "progressing",
            State::Paused => "paused",
            State::Promoted => "promoted",
            State::Completed => "completed",
            State::RolledBack => "rolled_back",
            State::Aborted => "aborted",
            State::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Finished: out of the snapshot (traffic goes as the route config sends it, as if there
    /// were no rollout) and archived. Only a rolled back, aborted or timed out one may retry.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            State::Completed | State::RolledBack | State::Aborted | State::TimedOut
        )
    }

    /// No more steps: promoted (waiting to be completed) or finished.
    pub const fn is_done_stepping(self) -> bool {
        matches!(self, State::Promoted) || self.is_finished()
    }

    /// Running on its own: its timers move it.
    const fn is_running(self) -> bool {
        matches!(self, State::Shadowing | State::Progressing)
    }
}

// === impl Move ===

impl Move {
    pub const ALL: [Move; 12] = [
        Move::Started,
        Move::Step,
        Move::Paused,
        Move::Resumed,
        Move::Promoted,
        Move::Weight,
        Move::KillSwitch,
        Move::Aborted,
        Move::RolledBack,
        Move::Retried,
        Move::Completed,
        Move::TimedOut,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Move::Started => "started",
            Move::Step => "step",
            Move::Paused => "paused",
            Move::Resumed => "resumed",
            Move::Promoted => "promoted",
            Move::Weight => "weight",
            Move::KillSwitch => "kill_switch",
            Move::Aborted => "aborted",
            Move::RolledBack => "rolled_back",
            Move::Retried => "retried",
            Move::Completed => "completed",
            Move::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Move> {
        Move::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Illegal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Holds ===

impl Holds {
    /// A new step owes its gates nothing yet; alerts fire on until they resolve.
    fn entering_step(&self) -> Holds {
        Holds {
            alerts: self.alerts.clone(),
            ..Holds::default()
        }
    }
}

crate::named::serde_by_name!(State);
crate::named::serde_by_name!(Move);

// === impl Runtime ===

impl Runtime {
    /// A new rollout, before its first step.
    pub fn new(plan: &Plan, now: Millis) -> Runtime {
        Runtime {
            state: State::Pending,
            step: 0,
            weight: 0.0,
            mirror: None,
            kill_switch: false,
            step_started_ms: now,
            step_ends_ms: None,
            paused_remaining_ms: None,
            deadline_ms: deadline(plan, now),
            analysis: Memory::default(),
            holds: Holds::default(),
        }
    }

    /// Why the rollout is held, if a gate or an alert holds it.
    pub fn held_by(&self) -> Option<String> {
        let alerts = self.holds.alerts.values().cloned();
        let all: Vec<String> = self.holds.gate.iter().cloned().chain(alerts).collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    /// The move the timer would make now if nothing held it: step 0, the next step, or the
    /// promotion. `None` while it waits for its pause, analysis or an operator.
    fn due(&self, plan: &Plan, now: Millis) -> Option<Gated> {
        if self.state.is_done_stepping() || self.deadline_ms.is_some_and(|d| d <= now) {
            return None;
        }
        if self.state == State::Pending {
            return Some(Gated::Start);
        }
        let due = self.state.is_running() && self.step_ends_ms.is_some_and(|end| end <= now);
        if !due || !may_advance(plan, self) {
            return None;
        }
        let next = self.step + 1;
        Some(if next >= plan.steps.len() {
            Gated::Promotion
        } else {
            Gated::Step(next)
        })
    }

    /// Whether gates still hold `to`: it has gates, and they have not all let it.
    fn gated(&self, plan: &Plan, to: Gated) -> bool {
        self.holds.passed != Some(to) && plan.gates_on(to.on()).next().is_some()
    }

    /// The move due now that only its gates hold: what the gate runner asks about.
    pub fn gate_due(&self, plan: &Plan, now: Millis) -> Option<Gated> {
        self.due(plan, now)
            .filter(|to| self.holds.alerts.is_empty() && self.gated(plan, *to))
    }

    /// The pause left in the current step, if it has a timed one.
    pub fn remaining_ms(&self, now: Millis) -> Option<Millis> {
        match self.state {
            State::Paused => self.paused_remaining_ms,
            _ => self.step_ends_ms.map(|end| (end - now).max(0)),
        }
    }

    /// Waiting at a manual gate for a promote.
    pub fn at_gate(&self, plan: &Plan) -> bool {
        !self.state.is_done_stepping()
            && self.state != State::Pending
            && plan
                .steps
                .get(self.step)
                .is_some_and(|s| s.pause == Pause::UntilPromoted)
    }

    /// The earliest time a tick could change this rollout. A step held back by analysis
    /// waits for the next analysis run, not for a timer.
    pub fn next_wake(&self, plan: &Plan) -> Option<Millis> {
        match self.state {
            s if s.is_finished() => return None,
            // `complete_after`, when the spec has one.
            State::Promoted => return self.step_ends_ms,
            _ => {}
        }
        // A move held by gates or alerts waits for their answer, not for a timer.
        let held = |to: Gated| !self.holds.alerts.is_empty() || self.gated(plan, to);
        if self.state == State::Pending {
            return if held(Gated::Start) {
                self.deadline_ms
            } else {
                Some(Millis::MIN)
            };
        }
        let next = if self.step + 1 >= plan.steps.len() {
            Gated::Promotion
        } else {
            Gated::Step(self.step + 1)
        };
        let step_end = if self.state.is_running() && may_advance(plan, self) && !held(next) {
            self.step_ends_ms
        } else {
            None
        };
        match (step_end, self.deadline_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a control. `Ok(None)`: nothing to do (a tick with nothing due, or a kill switch
    /// already in that position).
    pub fn apply(
        &self,
        plan: &Plan,
        control: &Control,
        now: Millis,
    ) -> Result<Option<(Runtime, Outcome)>, Illegal> {
        let state = self.state;
        let out = |kind: Move, reason: String| Outcome { kind, reason };
        match control {
            Control::Tick => Ok(self.tick(plan, now)),
            Control::Pause => {
                if state == State::Paused {
                    return Err(Illegal(
                        "cannot pause: the rollout is already paused".into(),
                    ));
                }
                self.require_stepping("pause")?;
                Ok(Some((
                    self.paused(plan, now),
                    out(
                        Move::Paused,
                        "paused by operator; analysis keeps judging".into(),
                    ),
                )))
            }
            Control::Resume => {
                if state != State::Paused {
                    return Err(Illegal(format!(
                        "cannot resume: the rollout is {state}, and only a paused rollout can resume"
                    )));
                }
                Ok(Some((
                    self.resumed(plan, now),
                    out(Move::Resumed, "resumed by operator".into()),
                )))
            }
            Control::AnalysisPause(why) => {
                self.require_stepping("pause")?;
                if state == State::Paused {
                    return Ok(None);
                }
                let mut rt = self.paused(plan, now);
                rt.analysis.pause();
                Ok(Some((rt, out(Move::Paused, why.clone()))))
            }
            Control::AnalysisResume(why) => {
                // Analysis only asks this of a rollout it paused (the controller drops a run
                // that an operator's pause or resume overtook).
                if state != State::Paused {
                    return Ok(None);
                }
                Ok(Some((
                    self.resumed(plan, now),
                    out(Move::Resumed, why.clone()),
                )))
            }
            Control::Promote { full } => {
                self.require_stepping("promote")?;
                let next = self.step + 1;
                if *full || next >= plan.steps.len() {
                    let why = if *full {
                        "full promotion by operator"
                    } else {
                        "promoted past the last step by operator"
                    };
                    Ok(Some((
                        self.promoted(plan, now),
                        out(Move::Promoted, why.into()),
                    )))
                } else {
                    let reason = format!("promoted to step {next} by operator");
                    Ok(Some((
                        self.enter_step(plan, next, now),
                        out(Move::Step, reason),
                    )))
                }
            }
            Control::Abort => {
                self.require_live("abort")?;
                Ok(Some((
                    self.finished(State::Aborted),
                    out(Move::Aborted, "aborted by operator".into()),
                )))
            }
            Control::RollBack(why) => {
                self.require_live("roll back")?;
                Ok(Some((
                    self.finished(State::RolledBack),
                    out(Move::RolledBack, why.clone()),
                )))
            }
            Control::Retry => {
                if !matches!(state, State::RolledBack | State::Aborted | State::TimedOut) {
                    return Err(Illegal(format!(
                        "cannot retry: the rollout is {state}; only rolled_back, aborted or timed_out rollouts can be retried"
                    )));
                }
                let mut rt = self.enter_step(plan, 0, now);
                rt.deadline_ms = deadline(plan, now);
                rt.analysis = Memory::default();
                Ok(Some((
                    rt,
                    out(Move::Retried, "retried from step 0 by operator".into()),
                )))
            }
            Control::Complete => {
                if state != State::Promoted {
                    return Err(Illegal(format!(
                        "cannot complete: the rollout is {state}; only a promoted rollout can be completed (promote it first, or abort it)"
                    )));
                }
                Ok(Some((
                    self.finished(State::Completed),
                    out(
                        Move::Completed,
                        "completed by operator: stable runs the promoted version".into(),
                    ),
                )))
            }
            Control::SetWeight(w) => {
                self.require_stepping("set the weight of")?;
                let mut rt = self.paused(plan, now);
                rt.weight = *w;
                let reason = if *w < self.weight {
                    format!(
                        "weight lowered from {} to {w} by operator, moving users back to stable; automatic stepping paused, analysis keeps judging",
                        self.weight
                    )
                } else {
                    format!(
                        "weight set to {w} by operator; automatic stepping paused, analysis keeps judging"
                    )
                };
                Ok(Some((rt, out(Move::Weight, reason))))
            }
            Control::KillSwitch(on) => {
                self.require_live("switch the kill switch of")?;
                if self.kill_switch == *on {
                    return Ok(None);
                }
                let rt = Runtime {
                    kill_switch: *on,
                    ..self.clone()
                };
                let reason = format!("kill switch {} by operator", if *on { "on" } else { "off" });
                Ok(Some((rt, out(Move::KillSwitch, reason))))
            }
        }
    }

    fn tick(&self, plan: &Plan, now: Millis) -> Option<(Runtime, Outcome)> {
        let outcome = |kind: Move, reason: String| Outcome { kind, reason };
        if self.state.is_finished() {
            return None;
        }
        if self.state == State::Promoted {
            // The deadline is for reaching 100%; a promoted rollout only waits to be completed.
            let due = self.step_ends_ms.is_some_and(|end| end <= now);
            return due.then(|| {
                let held = plan
                    .complete_after
                    .map_or_else(String::new, |d| humantime::format_duration(d).to_string());
                (
                    self.finished(State::Completed),
                    outcome(
                        Move::Completed,
                        format!("completed by itself after {held} at 100% (complete_after)"),
                    ),
                )
            });
        }
        if self.deadline_ms.is_some_and(|d| d <= now) {
            let rt = self.finished(State::TimedOut);
            return Some((rt, outcome(Move::TimedOut, "the deadline passed".into())));
        }
        let to = self.due(plan, now)?;
        if !self.holds.alerts.is_empty() || self.gated(plan, to) {
            return None;
        }
        Some(match to {
            Gated::Start => (
                self.enter_step(plan, 0, now),
                outcome(Move::Started, "entered step 0".into()),
            ),
            Gated::Promotion => (
                self.promoted(plan, now),
                outcome(Move::Promoted, "the last step's pause elapsed".into()),
            ),
            Gated::Step(next) => (
                self.enter_step(plan, next, now),
                outcome(
                    Move::Step,
                    format!("step {} pause elapsed; entered step {next}", self.step),
                ),
            ),
        })
    }

    /// Not finished: a promoted rollout can still be aborted or have its kill switch thrown.
    fn require_live(&self, what: &str) -> Result<(), Illegal> {
        if self.state.is_finished() {
            Err(Illegal(format!(
                "cannot {what} the rollout: it is {}",
                self.state
            )))
        } else {
            Ok(())
        }
    }

    /// Still stepping: neither promoted nor finished.
    fn require_stepping(&self, what: &str) -> Result<(), Illegal> {
        self.require_live(what)?;
        if self.state == State::Promoted {
            return Err(Illegal(format!(
                "cannot {what} the rollout: it is promoted; complete it once stable runs the promoted version, or abort it"
            )));
        }
        Ok(())
    }

    /// Step `i` starts now, with its pause and mirror, and its weight unless the canary
    /// already has more users: no step moves a user back to stable (after a manual weight above
    /// the plan, the rollout stays there until the plan catches up).
    fn enter_step(&self, plan: &Plan, i: usize, now: Millis) -> Runtime {
        let Some(step) = plan.steps.get(i) else {
            return self.promoted(plan, now);
        };
        let weight = step.weight.max(self.weight);
        let mirror = step.mirror.filter(|m| *m > 0.0);
        let state = if mirror.is_some() && weight == 0.0 {
            State::Shadowing
        } else {
            State::Progressing
        };
        Runtime {
            state,
            step: i,
            weight,
            mirror,
            step_started_ms: now,
            step_ends_ms: match step.pause {
                Pause::For(d) => Some(now.saturating_add(millis(d))),
                Pause::UntilPromoted => None,
            },
            paused_remaining_ms: None,
            analysis: self.analysis.entering_step(),
            holds: self.holds.entering_step(),
            ..self.clone()
        }
    }

    /// Back to running the current step with the pause it had left, at the weight it has.
    fn resumed(&self, plan: &Plan, now: Millis) -> Runtime {
        let ends = self.paused_remaining_ms.map(|r| now + r);
        let mut rt = self.enter_step(plan, self.step, now);
        rt.step_ends_ms = ends;
        rt.analysis = self.analysis.resuming();
        rt
    }

    fn paused(&self, plan: &Plan, now: Millis) -> Runtime {
        let remaining = match self.state {
            State::Paused => self.paused_remaining_ms,
            State::Pending => match plan.steps.first().map(|s| s.pause) {
                Some(Pause::For(d)) => Some(millis(d)),
                _ => None,
            },
            _ => self.step_ends_ms.map(|end| (end - now).max(0)),
        };
        Runtime {
            state: State::Paused,
            step_ends_ms: None,
            paused_remaining_ms: remaining,
            ..self.clone()
        }
    }

    /// Everyone on the canary; with `complete_after`, completed by itself after that hold.
    fn promoted(&self, plan: &Plan, now: Millis) -> Runtime {
        Runtime {
            step_ends_ms: plan.complete_after.map(|d| now.saturating_add(millis(d))),
            holds: self.holds.entering_step(),
            ..self.finished(State::Promoted)
        }
    }

    fn finished(&self, state: State) -> Runtime {
        let weight = match state {
            State::Promoted | State::Completed => 100.0,
            _ => 0.0,
        };
        Runtime {
            state,
            weight,
            mirror: None,
            step_ends_ms: None,
            paused_remaining_ms: None,
            ..self.clone()
        }
    }
}

/// Applies `control` (if any), then ticks until nothing more is due (pause-0 steps pass in
/// one go): every transition, in order. The controller commits each; the simulation keeps the
/// last.
pub fn settle(
    plan: &Plan,
    rt: &Runtime,
    control: Option<&Control>,
    now: Millis,
) -> Result<Vec<(Runtime, Outcome)>, Illegal> {
    let mut out: Vec<(Runtime, Outcome)> = Vec::new();
    if let Some(c) = control {
        out.extend(rt.apply(plan, c, now)?);
    }
    // Each tick enters a later step or ends the rollout, so this many always suffice.
    for _ in 0..plan.steps.len() + 2 {
        let current = out.last().map_or(rt, |(r, _)| r);
        match current.apply(plan, &Control::Tick, now)? {
            Some(next) => out.push(next),
            None => break,
        }
    }
    Ok(out)
}

/// Whether a step whose pause has elapsed may advance: with analysis, only after its
/// required number of consecutive passing checks in this step.
pub fn may_advance(plan: &Plan, rt: &Runtime) -> bool {
    plan.analysis
        .as_ref()
        .is_none_or(|a| rt.analysis.has_passed(a.passes))
}

fn deadline(plan: &Plan, now: Millis) -> Option<Millis> {
    plan.deadline.map(|d| now.saturating_add(millis(d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Format, RolloutSpec};

    fn plan() -> Plan {
        let yaml = "name: a\nmirror_cluster: shadow\ndeadline: 1h\nsteps:\n- {mirror: 50, pause: 10s}\n- {weight: 10, pause: 20s}\n- {weight: 50, pause: until promoted}\n- {weight: 100}\n";
        RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap().1
    }

    fn step(rt: &Runtime, plan: &Plan, c: Control, now: Millis) -> Runtime {
        rt.apply(plan, &c, now).unwrap().unwrap().0
    }

    fn gated_plan() -> Plan {
        let yaml = "name: a\ndeadline: 1h\ngates:\n- {name: start, on: pre_rollout, url: 'http://127.0.0.1:9/s'}\n- {name: ci, on: confirm_promotion, url: 'http://127.0.0.1:9/c'}\nsteps:\n- {weight: 10, pause: 10s}\n- {weight: 100}\n";
        RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap().1
    }

    #[test]
    fn gates_hold_the_moves_they_guard_until_they_pass() {
        let p = gated_plan();
        let rt = Runtime::new(&p, 0);
        // pre_rollout: held, and no busy wake while held (the gate runner asks).
        assert_eq!(rt.gate_due(&p, 0), Some(Gated::Start));
        assert!(rt.apply(&p, &Control::Tick, 0).unwrap().is_none());
        assert_eq!(rt.next_wake(&p), Some(3_600_000));
        let mut passed = rt.clone();
        passed.holds.passed = Some(Gated::Start);
        assert_eq!(passed.gate_due(&p, 0), None);
        let rt = step(&passed, &p, Control::Tick, 0);
        assert_eq!(
            (rt.state, rt.step, rt.holds.passed),
            (State::Progressing, 0, None)
        );
        // Step 1 has no pre_step gate; its end is the promotion, which `ci` confirms.
        assert_eq!(
            rt.gate_due(&p, 5_000),
            None,
            "not due before the pause ends"
        );
        let rt = step(&rt, &p, Control::Tick, 10_000);
        assert_eq!((rt.step, rt.weight), (1, 100.0));
        assert_eq!(rt.gate_due(&p, 10_000), Some(Gated::Promotion));
        assert!(rt.apply(&p, &Control::Tick, 20_000).unwrap().is_none());
        // A pass for another move does not let this one.
        let mut wrong = rt.clone();
        wrong.holds.passed = Some(Gated::Start);
        assert!(wrong.apply(&p, &Control::Tick, 20_000).unwrap().is_none());
        let mut ok = rt.clone();
        ok.holds.passed = Some(Gated::Promotion);
        let done = step(&ok, &p, Control::Tick, 20_000);
        assert_eq!((done.state, done.holds.passed), (State::Promoted, None));
        // An operator's promote is a decision of its own: it does not ask the gates.
        let by_hand = step(&rt, &p, Control::Promote { full: true }, 20_000);
        assert_eq!(by_hand.state, State::Promoted);
    }

    #[test]
    fn a_warning_alert_holds_stepping_until_it_resolves() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let mut held = rt.clone();
        held.holds
            .alerts
            .insert("f1".into(), "alert X firing".into());
        held.holds.gate = Some("gate ci holds".into());
        assert_eq!(
            held.held_by().as_deref(),
            Some("gate ci holds; alert X firing")
        );
        assert!(held.apply(&p, &Control::Tick, 10_000).unwrap().is_none());
        assert_eq!(held.gate_due(&p, 10_000), None, "gates wait for the alert");
        assert_eq!(held.next_wake(&p), Some(3_600_000));
        // Entering a step by hand keeps the alert's hold and drops the gate's.
        let next = step(&held, &p, Control::Promote { full: false }, 10_000);
        assert_eq!(next.held_by().as_deref(), Some("alert X firing"));
        assert_eq!(step(&rt, &p, Control::Tick, 10_000).step, 1);
    }

    #[test]
    fn walks_the_schedule() {
        let p = plan();
        let rt = Runtime::new(&p, 0);
        assert_eq!(rt.state, State::Pending);
        assert_eq!(rt.deadline_ms, Some(3_600_000));
        let rt = step(&rt, &p, Control::Tick, 0);
        assert_eq!(
            (rt.state, rt.step, rt.weight, rt.mirror),
            (State::Shadowing, 0, 0.0, Some(50.0))
        );
        assert!(rt.apply(&p, &Control::Tick, 9_999).unwrap().is_none());
        let rt = step(&rt, &p, Control::Tick, 10_000);
        assert_eq!(
            (rt.state, rt.step, rt.weight, rt.mirror),
            (State::Progressing, 1, 10.0, None)
        );
        let rt = step(&rt, &p, Control::Tick, 30_000);
        assert_eq!((rt.step, rt.weight), (2, 50.0));
        assert!(rt.at_gate(&p));
        assert_eq!(rt.next_wake(&p), Some(3_600_000));
        assert!(rt.apply(&p, &Control::Tick, 3_000_000).unwrap().is_none());
        let rt = step(&rt, &p, Control::Promote { full: false }, 3_000_000);
        assert_eq!((rt.step, rt.weight), (3, 100.0));
        let rt = step(&rt, &p, Control::Tick, 3_000_000);
        assert_eq!(
            (rt.state, rt.weight, rt.mirror),
            (State::Promoted, 100.0, None)
        );
    }

    #[test]
    fn pause_keeps_the_remaining_time() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let rt = step(&rt, &p, Control::Pause, 4_000);
        assert_eq!(
            (rt.state, rt.remaining_ms(99_999)),
            (State::Paused, Some(6_000))
        );
        assert!(rt.apply(&p, &Control::Tick, 50_000).unwrap().is_none());
        let rt = step(&rt, &p, Control::Resume, 50_000);
        assert_eq!(
            (rt.state, rt.step_ends_ms),
            (State::Shadowing, Some(56_000))
        );
    }

    #[test]
    fn manual_weight_pauses_and_resume_restores_the_step() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let rt = step(&rt, &p, Control::Tick, 10_000);
        let rt = step(&rt, &p, Control::SetWeight(37.5), 15_000);
        assert_eq!(
            (rt.state, rt.weight, rt.paused_remaining_ms),
            (State::Paused, 37.5, Some(15_000))
        );
        // Resume keeps the step's remaining pause and never moves a user back to stable.
        let rt = step(&rt, &p, Control::Resume, 20_000);
        assert_eq!(
            (rt.state, rt.weight, rt.step_ends_ms),
            (State::Progressing, 37.5, Some(35_000))
        );
        // The next step's 50 is above it: the plan takes over again.
        let rt = step(&rt, &p, Control::Tick, 35_000);
        assert_eq!((rt.step, rt.weight), (2, 50.0));
    }

    #[test]
    fn only_an_explicit_lower_weight_moves_users_back_and_it_says_so() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let rt = step(&rt, &p, Control::Tick, 10_000);
        let (_, raised) = rt
            .apply(&p, &Control::SetWeight(30.0), 11_000)
            .unwrap()
            .unwrap();
        assert!(
            !raised.reason.contains("back to stable"),
            "{}",
            raised.reason
        );
        let (low, lowered) = rt
            .apply(&p, &Control::SetWeight(4.0), 11_000)
            .unwrap()
            .unwrap();
        assert_eq!(low.weight, 4.0);
        assert!(
            lowered.reason.contains("from 10 to 4") && lowered.reason.contains("back to stable"),
            "{}",
            lowered.reason
        );
        // Promote to the next step from a manual weight above it keeps the weight.
        let high = step(&rt, &p, Control::SetWeight(80.0), 12_000);
        let next = step(&high, &p, Control::Promote { full: false }, 13_000);
        assert_eq!((next.step, next.weight), (2, 80.0));
    }

    #[test]
    fn a_promoted_rollout_only_completes_or_aborts() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let promoted = step(&rt, &p, Control::Promote { full: true }, 5);
        assert_eq!((promoted.state, promoted.weight), (State::Promoted, 100.0));
        // Without complete_after it waits for the operator, past the deadline too.
        assert!(promoted
            .apply(&p, &Control::Tick, 10_000_000)
            .unwrap()
            .is_none());
        for c in [
            Control::Pause,
            Control::Promote { full: true },
            Control::SetWeight(50.0),
        ] {
            let e = promoted.apply(&p, &c, 6).unwrap_err();
            assert!(e.0.contains("promoted") && e.0.contains("complete"), "{e}");
        }
        assert!(live_complete_refused(&rt, &p).contains("shadowing"));
        let done = step(&promoted, &p, Control::Complete, 7);
        assert_eq!((done.state, done.weight), (State::Completed, 100.0));
        assert!(done.state.is_finished());
        for c in [
            Control::Complete,
            Control::Abort,
            Control::KillSwitch(true),
            Control::Retry,
        ] {
            let e = done.apply(&p, &c, 8).unwrap_err();
            assert!(e.0.contains("completed"), "{e}");
        }
        // A promoted rollout can still be aborted.
        assert_eq!(step(&promoted, &p, Control::Abort, 9).state, State::Aborted);
    }

    fn live_complete_refused(rt: &Runtime, p: &Plan) -> String {
        rt.apply(p, &Control::Complete, 1).unwrap_err().0
    }

    #[test]
    fn complete_after_completes_by_itself_after_the_hold() {
        let yaml = "name: a\ncomplete_after: 1m\nsteps:\n- {weight: 10, pause: 10s}\n";
        let p = RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap().1;
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let promoted = step(&rt, &p, Control::Tick, 10_000);
        assert_eq!(promoted.state, State::Promoted);
        assert_eq!(promoted.next_wake(&p), Some(70_000));
        assert!(promoted
            .apply(&p, &Control::Tick, 69_999)
            .unwrap()
            .is_none());
        let (done, why) = promoted.apply(&p, &Control::Tick, 70_000).unwrap().unwrap();
        assert_eq!(done.state, State::Completed);
        assert!(why.reason.contains("complete_after"), "{}", why.reason);
    }

    #[test]
    fn illegal_controls_name_the_state() {
        let p = plan();
        let live = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let aborted = step(&live, &p, Control::Abort, 1);
        assert_eq!(
            (aborted.state, aborted.weight, aborted.mirror),
            (State::Aborted, 0.0, None)
        );
        for c in [
            Control::Pause,
            Control::Promote { full: true },
            Control::Promote { full: false },
            Control::Abort,
            Control::SetWeight(1.0),
        ] {
            let e = aborted.apply(&p, &c, 2).unwrap_err();
            assert!(e.0.contains("aborted"), "{e}");
        }
        assert!(live
            .apply(&p, &Control::Resume, 2)
            .unwrap_err()
            .0
            .contains("shadowing"));
        assert!(live
            .apply(&p, &Control::Retry, 2)
            .unwrap_err()
            .0
            .contains("shadowing"));
        let paused = step(&live, &p, Control::Pause, 2);
        assert!(paused
            .apply(&p, &Control::Pause, 3)
            .unwrap_err()
            .0
            .contains("already paused"));
        let rolled = step(&live, &p, Control::RollBack("p99".into()), 2);
        assert!(rolled
            .apply(&p, &Control::Promote { full: false }, 3)
            .unwrap_err()
            .0
            .contains("rolled_back"));
        let retried = step(&rolled, &p, Control::Retry, 100);
        assert_eq!(
            (retried.state, retried.step, retried.deadline_ms),
            (State::Shadowing, 0, Some(3_600_100))
        );
    }

    #[test]
    fn deadline_times_out_even_when_paused() {
        let p = plan();
        let rt = step(&Runtime::new(&p, 0), &p, Control::Tick, 0);
        let rt = step(&rt, &p, Control::Pause, 1);
        let rt = step(&rt, &p, Control::Tick, 3_600_000);
        assert_eq!((rt.state, rt.weight), (State::TimedOut, 0.0));
    }

    #[test]
    fn kill_switch_is_idempotent() {
        let p = plan();
        let rt = Runtime::new(&p, 0);
        assert!(rt
            .apply(&p, &Control::KillSwitch(false), 0)
            .unwrap()
            .is_none());
        let on = step(&rt, &p, Control::KillSwitch(true), 0);
        assert!(on.kill_switch);
    }
}
