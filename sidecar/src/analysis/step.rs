//! One analysis run on one rollout, from what its source observed to where the state machine
//! settles: judge every guardrail, decide, turn the decision into a control, and apply it with
//! the steps it makes due. The runner and the simulation both call [`run`]; neither holds a
//! copy of any part of it, so the decision-quality figures describe the code that ships.

use super::judge::{self, Action, Check, Ruling};
use super::policy::Analysis;
use super::source::Observed;
use crate::clock::Millis;
use crate::machine::{self, Control, Illegal, Outcome, Runtime, State};
use crate::spec::Plan;

/// What one run found and what it leads to.
#[derive(Debug, Clone)]
pub struct Step {
    pub checks: Vec<Check>,
    pub decision: Ruling,
    /// The runtime with the run's memory, before any transition: what the run records.
    pub judged: Runtime,
    /// The control the decision asks for (`None`: pass or hold).
    pub control: Option<Control>,
}

/// Judges and decides. A rollout held by an operator (paused, or at a manual weight) stays
/// held: analysis neither pauses nor resumes it, and still rolls it back.
pub fn judge(
    analysis: &Analysis,
    rt: &Runtime,
    observed: Result<&Observed, &str>,
    subject: &str,
    now: Millis,
) -> Step {
    let held = held_by_operator(rt);
    let mut memory = rt.analysis.clone();
    let checks = judge::judge(analysis, observed, subject, &mut memory);
    let mut decision = judge::decide(analysis, &checks, &mut memory);
    memory.ran_at(now);
    if held && decision.action == Action::Pause {
        memory.decline_pause();
        decision = Ruling::new(
            Action::Hold,
            format!(
                "{}; the rollout is already held by an operator",
                decision.reason
            ),
        );
    }
    let why = decision.reason.clone();
    let control = match decision.action {
        Action::RollBack => Some(Control::RollBack(why)),
        Action::Pause => Some(Control::AnalysisPause(why)),
        Action::Resume => Some(Control::AnalysisResume(why)),
        Action::Pass | Action::Hold => None,
    };
    Step {
        checks,
        decision,
        judged: Runtime {
            analysis: memory,
            ..rt.clone()
        },
        control,
    }
}

/// Judges, decides and settles: what the run found, and the transitions it leads to, in
/// order (`Err`: the state machine refused the decision's control; the run stands).
pub fn run(
    plan: &Plan,
    analysis: &Analysis,
    rt: &Runtime,
    observed: Result<&Observed, &str>,
    subject: &str,
    now: Millis,
) -> (Step, Result<Vec<(Runtime, Outcome)>, Illegal>) {
    let step = judge(analysis, rt, observed, subject, now);
    let transitions = machine::settle(plan, &step.judged, step.control.as_ref(), now);
    (step, transitions)
}

/// Paused by someone other than analysis: an operator's pause or a manual weight.
pub fn held_by_operator(rt: &Runtime) -> bool {
    rt.state == State::Paused && !rt.analysis.paused
}
