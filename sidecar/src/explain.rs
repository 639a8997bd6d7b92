//! A rollout's decision timeline in plain words, from its audit events: what happened, when,
//! and why; analysis runs with the guardrails that did not pass.

use crate::clock::Millis;
use crate::store::Event;
use serde::Serialize;
use serde_json::Value;

/// One line of the timeline; repeated runs with the same outcome are folded into one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Line {
    pub at_ms: Millis,
    /// The last event folded into this line (equal to `at_ms` for a single event).
    pub until_ms: Millis,
    pub kind: String,
    pub text: String,
    /// Guardrails that failed or had no data, one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// How many events the line stands for.
    pub count: usize,
}

/// The timeline of one rollout's events (oldest first).
pub fn timeline(events: &[Event]) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut last_key: Option<(u64, String)> = None;
    for e in events {
        let d = &e.data;
        if e.kind == "analysis" {
            let decision = d["decision"].as_str().unwrap_or("?").to_owned();
            let step = d["step"].as_u64().unwrap_or(0);
            let key = (step, decision.clone());
            let details = details(&d["checks"]);
            // Fold runs of the same outcome in the same step, when nothing stands out.
            if last_key.as_ref() == Some(&key) && details.is_empty() {
                if let Some(line) = out.last_mut() {
                    if line.details.is_empty() {
                        line.until_ms = e.at_ms;
                        line.count += 1;
                        line.text = analysis_text(d, line.count);
                        continue;
                    }
                }
            }
            last_key = Some(key);
            out.push(Line {
                at_ms: e.at_ms,
                until_ms: e.at_ms,
                kind: format!("check:{decision}"),
                text: analysis_text(d, 1),
                details,
                count: 1,
            });
            continue;
        }
        last_key = None;
        let reason = d["reason"].as_str().unwrap_or("");
        let text = match e.kind.as_str() {
            "created" => format!(
                "created with {} steps ({reason})",
                d["steps"].as_u64().unwrap_or(0)
            ),
            _ => {
                let mut t = reason.to_owned();
                if let (Some(to), Some(step)) = (d["to"].as_str(), d["step"].as_u64()) {
                    t.push_str(&format!(
                        " → {to}, step {step}, weight {}%",
                        number(&d["weight"])
                    ));
                }
                t
            }
        };
        out.push(Line {
            at_ms: e.at_ms,
            until_ms: e.at_ms,
            kind: e.kind.clone(),
            text,
            details: Vec::new(),
            count: 1,
        });
    }
    out
}

fn analysis_text(d: &Value, count: usize) -> String {
    let decision = match d["decision"].as_str().unwrap_or("?") {
        "pass" => "passed",
        "hold" => "held",
        "roll_back" => "ROLL BACK",
        "pause" => "PAUSE",
        "resume" => "resume",
        other => other,
    };
    let runs = if count > 1 {
        format!("{count} checks ")
    } else {
        "check ".to_owned()
    };
    format!(
        "{runs}at step {}, weight {}%: {decision}: {}",
        d["step"].as_u64().unwrap_or(0),
        number(&d["weight"]),
        d["reason"].as_str().unwrap_or("")
    )
}

fn details(checks: &Value) -> Vec<String> {
    checks
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["verdict"] != "pass")
                .map(|c| {
                    format!(
                        "{} ({}, {}): {}",
                        c["guardrail"].as_str().unwrap_or("?"),
                        c["severity"].as_str().unwrap_or("?"),
                        c["verdict"].as_str().unwrap_or("?").replace('_', " "),
                        c["text"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn number(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "?".into(), crate::analysis::judge::trim)
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
    use serde_json::json;

    fn ev(id: i64, kind: &str, data: Value) -> Event {
        Event {
            id,
            at_ms: id * 1000,
            rollout: Some("r".into()),
            rollout_id: Some(1),
            kind: kind.into(),
            data,
        }
    }

    #[test]
    fn folds_repeated_passes_and_keeps_what_failed() {
        let pass = |id| {
            ev(
                id,
                "analysis",
                json!({"step": 0, "weight": 10.0, "decision": "pass", "reason": "all 2 guardrails passed",
                       "checks": [{"guardrail": "error-rate", "severity": "critical", "verdict": "pass", "text": "ok"}]}),
            )
        };
        let events = vec![
            ev(
                1,
                "created",
                json!({"steps": 3, "reason": "created by operator"}),
            ),
            ev(
                2,
                "started",
                json!({"reason": "entered step 0", "to": "progressing", "step": 0, "weight": 10.0}),
            ),
            pass(3),
            pass(4),
            pass(5),
            ev(
                6,
                "analysis",
                json!({"step": 0, "weight": 10.0, "decision": "roll_back", "reason": "critical guardrail error-rate failed",
                       "checks": [{"guardrail": "error-rate", "severity": "critical", "verdict": "fail", "text": "canary error rate 20%"}]}),
            ),
            ev(
                7,
                "rolled_back",
                json!({"reason": "critical guardrail error-rate failed", "to": "rolled_back", "step": 0, "weight": 0.0}),
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
    fn clock_time_is_utc() {
        assert_eq!(clock_time(0), "00:00:00");
        assert_eq!(
            clock_time(((13 * 60 + 5) * 60 + 9) * 1000 + 999),
            "13:05:09"
        );
    }
}
