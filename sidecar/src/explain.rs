//! A rollout's decision timeline in plain words, from its audit events: what happened, when,
//! and why; analysis runs with the guardrails that did not pass.

use crate::analysis::judge::trim;
use crate::analysis::Action;
use crate::analysis::{Check, Verdict};
use crate::clock::Millis;
use crate::event::{AnalysisRun, Payload};
use crate::store::Event;
use serde::{Deserialize, Serialize};

/// One line of the timeline; repeated runs with the same outcome are folded into one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub at_ms: Millis,
    /// The last event folded into this line (equal to `at_ms` for a single event).
    pub until_ms: Millis,
    pub kind: String,
    /// Who acted: a key's name, or `analysis`, `schedule`, `deadline`, `gate`.
    #[serde(default)]
    pub actor: String,
    pub text: String,
    /// Guardrails that failed or had no data, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// How many events the line stands for.
    pub count: usize,
}

/// The timeline of one rollout's events (oldest first).
pub fn timeline(events: &[Event]) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut last_key: Option<(usize, Action)> = None;
    for e in events {
        let text = match &e.payload {
            Payload::Analysis(run) => {
                let key = (run.step, run.decision);
                let details = details(&run.checks);
                // Fold runs of the same outcome in the same step, when nothing stands out.
                if last_key == Some(key) && details.is_empty() {
                    if let Some(line) = out.last_mut().filter(|l| l.details.is_empty()) {
                        line.until_ms = e.at_ms;
                        line.count += 1;
                        line.text = analysis_text(run, line.count);
                        continue;
                    }
                }
                last_key = Some(key);
                out.push(Line {
                    at_ms: e.at_ms,
                    until_ms: e.at_ms,
                    kind: format!("check:{}", run.decision.as_str()),
                    actor: e.actor.clone(),
                    text: analysis_text(run, 1),
                    details,
                    count: 1,
                });
                continue;
            }
            Payload::Created(c) => format!("created with {} steps ({})", c.steps, c.reason),
            Payload::Moved(_, m) => format!(
                "{} → {}, step {}, weight {}%",
                m.reason,
                m.to,
                m.step,
                trim(m.weight)
            ),
            Payload::KillSwitch(k) => k.reason.clone(),
            Payload::Key(k) => k.reason.clone(),
            Payload::Gate(g) => g.reason.clone(),
            Payload::Alert(a) => a.reason.clone(),
            // Written by another version: shown as stored.
            Payload::Unread { data, .. } => data.to_string(),
        };
        last_key = None;
        out.push(Line {
            at_ms: e.at_ms,
            until_ms: e.at_ms,
            kind: e.kind().to_owned(),
            actor: e.actor.clone(),
            text,
            details: Vec::new(),
            count: 1,
        });
    }
    out
}

fn analysis_text(run: &AnalysisRun, count: usize) -> String {
    let decision = match run.decision {
        Action::Pass => "passed",
        Action::Hold => "held",
        Action::RollBack => "ROLL BACK",
        Action::Pause => "PAUSE",
        Action::Resume => "resume",
    };
    let runs = if count > 1 {
        format!("{count} checks ")
    } else {
        "check ".to_owned()
    };
    format!(
        "{runs}at step {}, weight {}%: {decision}: {}",
        run.step,
        trim(run.weight),
        run.reason
    )
}

/// The guardrails that did not pass.
fn details(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| {
            format!(
                "{} ({}, {}): {}",
                c.guardrail,
                c.severity.as_str(),
                c.verdict.as_str().replace('_', " "),
                c.text
            )
        })
        .collect()
}

/// `HH:MM:SS` UTC of a Unix time in ms.
pub fn clock_time(ms: Millis) -> String {
    let s = ms.div_euclid(1000);
    let day = s.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::Severity;
    use crate::event::{Created, Moved};
    use crate::machine::{Move, State};

    fn ev(id: i64, payload: Payload) -> Event {
        Event {
            id,
            at_ms: id * 1000,
            rollout: Some("r".into()),
            rollout_id: Some(1),
            version: Some(1),
            actor: "ci".into(),
            payload,
        }
    }

    fn run(decision: Action, reason: &str, verdict: Verdict, text: &str) -> Payload {
        Payload::Analysis(AnalysisRun {
            step: 0,
            weight: 10.0,
            subject: "canary".into(),
            decision,
            reason: reason.into(),
            checks: vec![Check {
                guardrail: "error-rate".into(),
                kind: "error_rate".into(),
                severity: Severity::Critical,
                verdict,
                observed: None,
                limit: None,
                text: text.into(),
            }],
            observed: serde_json::Value::Null,
        })
    }

    fn moved(kind: Move, to: State, weight: f64, reason: &str) -> Payload {
        Payload::Moved(
            kind,
            Moved {
                from: State::Pending,
                to,
                step: 0,
                weight,
                mirror: None,
                kill_switch: false,
                reason: reason.into(),
            },
        )
    }

    #[test]
    fn folds_repeated_passes_and_keeps_what_failed() {
        let pass = |id| {
            ev(
                id,
                run(Action::Pass, "all 2 guardrails passed", Verdict::Pass, "ok"),
            )
        };
        let events = vec![
            ev(
                1,
                Payload::Created(Created {
                    state: State::Pending,
                    steps: 3,
                    reason: "created by operator".into(),
                }),
            ),
            ev(
                2,
                moved(Move::Started, State::Progressing, 10.0, "entered step 0"),
            ),
            pass(3),
            pass(4),
            pass(5),
            ev(
                6,
                run(
                    Action::RollBack,
                    "critical guardrail error-rate failed",
                    Verdict::Fail,
                    "canary error rate 20%",
                ),
            ),
            ev(
                7,
                moved(
                    Move::RolledBack,
                    State::RolledBack,
                    0.0,
                    "critical guardrail error-rate failed",
                ),
            ),
        ];
        let lines = timeline(&events);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(lines[0].text, "created with 3 steps (created by operator)");
        assert_eq!(lines[2].count, 3);
        assert_eq!((lines[2].at_ms, lines[2].until_ms), (3000, 5000));
        assert!(lines[2]
            .text
            .starts_with("3 checks at step 0, weight 10%: passed"));
        assert_eq!(lines[3].kind, "check:roll_back");
        assert_eq!(
            lines[3].details,
            vec!["error-rate (critical, fail): canary error rate 20%"]
        );
        assert!(lines[4].text.ends_with("→ rolled_back, step 0, weight 0%"));
    }

    #[test]
    fn a_row_this_version_cannot_read_is_shown_as_stored() {
        let rows = [
            ("promoted", "{}"),
            ("analysis", r#"{"step": "zero"}"#),
            ("renamed_in_2030", r#"{"reason": "later"}"#),
            ("created", "not json"),
        ];
        let events: Vec<Event> = rows
            .iter()
            .enumerate()
            .map(|(i, (kind, data))| {
                Event::from_row(i as i64, 0, None, None, (*kind).into(), data, None)
            })
            .collect();
        let lines = timeline(&events);
        let shown: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.kind.as_str(), l.text.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("promoted", "{}"),
                ("analysis", r#"{"step":"zero"}"#),
                ("renamed_in_2030", r#"{"reason":"later"}"#),
                ("created", r#""not json""#),
            ]
        );
        // The audit API serves them as stored, too.
        let wire = serde_json::to_value(&events[3]).unwrap();
        assert_eq!(wire["data"], "not json");
    }

    #[test]
    fn clock_time_is_utc() {
        assert_eq!(clock_time(0), "00:00:00");
        assert_eq!(
            clock_time(((13 * 60 + 5) * 60 + 9) * 1000 + 999),
            "13:05:09"
        );
    }
}
