//! The audit events, typed: one struct per kind of event the controller writes, serialized
//! once for the store, the audit API and the event stream, and read back by the timeline.
//!
//! On the wire (and in the store's `kind`, `data` and `actor` columns) an event is
//! `{"id", "at_ms", "rollout"?, "rollout_id"?, "kind", "actor", "data"}`, with the store's
//! snapshot `version` inside `data`. The actor is who acted ([`actor`]). A row this version cannot read (an older writer, an unknown kind,
//! data that is not JSON) is kept as it was stored and shown plainly, never dropped.

use crate::alerts::AlertStatus;
use crate::analysis::policy::Severity;
use crate::analysis::{Action, Check};
use crate::auth::Scope;
use crate::clock::Millis;
use crate::gate::{Answer, GateOn, Gated};
use crate::machine::{Move, State};
use crate::report;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;

/// An audit event; its id orders every event ever written.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at_ms: Millis,
    pub rollout: Option<String>,
    /// The release (rollout id) the event belongs to, when it belongs to one.
    pub rollout_id: Option<i64>,
    /// The snapshot version once the event was committed (`None` in rows that lack it).
    pub version: Option<u64>,
    /// Who acted: a key's name, or one of [`actor`]'s.
    pub actor: String,
    pub payload: Payload,
}

/// Who acts besides the keys (whose names cannot be these).
pub mod actor {
    /// The admin token `serve` was given or made: the bootstrap admin.
    pub const ADMIN: &str = "admin";
    /// An analysis run, and what its decision did.
    pub const ANALYSIS: &str = "analysis";
    /// The plan's own schedule: a pause elapsed.
    pub const SCHEDULE: &str = "schedule";
    /// The rollout's deadline.
    pub const DEADLINE: &str = "deadline";
    /// A gate's answers, and the moves they let or the rollback they caused.
    pub const GATE: &str = "gate";
    /// An event from before actors were recorded that names none.
    pub const SYSTEM: &str = "system";
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// `kind: created`.
    Created(Created),
    /// A transition of the state machine; its kind is the event's `kind`.
    Moved(Move, Moved),
    /// `kind: analysis`: one analysis run.
    Analysis(AnalysisRun),
    /// `kind: kill_switch` without a rollout: the global kill switch.
    KillSwitch(KillSwitch),
    /// `kind: gate`: the gates before a move were asked.
    Gate(GateRun),
    /// `kind: alert`: an Alertmanager alert that judges the rollout fired or resolved.
    Alert(AlertSeen),
    /// `kind: key`, without a rollout: an API key made or revoked.
    Key(KeyChanged),
    /// A stored row this version does not read: its kind and data as they were.
    Unread { kind: String, data: Value },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub state: State,
    pub steps: usize,
    pub reason: String,
}

/// Where a transition took a rollout, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Moved {
    pub from: State,
    pub to: State,
    pub step: usize,
    pub weight: f64,
    pub mirror: Option<f64>,
    pub kill_switch: bool,
    pub reason: String,
}

/// One analysis run: where the rollout was, what the run decided and on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRun {
    pub step: usize,
    pub weight: f64,
    /// What was judged: the canary, or its shadow.
    pub subject: String,
    pub decision: Action,
    pub reason: String,
    pub checks: Vec<Check>,
    /// The inputs as the source returned them (their shape is the source's).
    pub observed: Value,
}

/// The gates of one move, asked: the answers in order (the first that held ends the list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRun {
    pub on: GateOn,
    /// The step the rollout was in.
    pub step: usize,
    /// The move the gates hold or let.
    pub to: Gated,
    pub passed: bool,
    pub answers: Vec<Answer>,
    /// Failed answers in a row for this move, and how many roll back (0: never).
    pub failures: u32,
    pub limit: u32,
    pub reason: String,
}

/// An alert as it reached the rollout, and what it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertSeen {
    pub alert: String,
    pub status: AlertStatus,
    pub severity: Severity,
    /// Alertmanager's fingerprint (or the labels): what a hold is keyed by.
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `rolled_back`, `held`, `released` or `recorded`.
    pub action: String,
    pub reason: String,
}

/// An API key made or revoked: never its secret or the secret's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChanged {
    /// `created` or `revoked`.
    pub action: String,
    pub name: String,
    pub scope: Scope,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub on: bool,
    pub reason: String,
}

/// The event as it crosses the wire and lies in the store.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Event)]
struct Wire {
    id: i64,
    at_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout_id: Option<i64>,
    kind: String,
    /// Who acted: a key's name (`admin` for the admin token), or `analysis`, `schedule`,
    /// `deadline`, `gate`.
    #[serde(default = "system")]
    actor: String,
    data: Value,
}

fn system() -> String {
    actor::SYSTEM.to_owned()
}

/// The store's field in every event's data.
#[derive(Deserialize)]
struct Stamp {
    version: Option<u64>,
}

// === impl Event ===

// The document describes an event as it is sent: as its wire form.
impl utoipa::PartialSchema for Event {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Wire as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Event {
    fn name() -> std::borrow::Cow<'static, str> {
        <Wire as utoipa::ToSchema>::name()
    }
}

impl Event {
    /// An event as stored: `kind`, the `data` column's text and the `actor` column (empty in
    /// rows written before it: then read from the event, as reports did before).
    pub fn from_row(
        id: i64,
        at_ms: Millis,
        rollout: Option<String>,
        rollout_id: Option<i64>,
        kind: String,
        data: &str,
        actor: Option<String>,
    ) -> Event {
        // Text that is not JSON is kept as a string: the row is still shown.
        let data = serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()));
        let mut event = Event::from(Wire {
            id,
            at_ms,
            rollout,
            rollout_id,
            kind,
            actor: String::new(),
            data,
        });
        event.actor = actor
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| event.payload.legacy_actor().to_owned());
        event
    }

    pub fn kind(&self) -> &str {
        self.payload.kind()
    }

    /// The `data` column and field: the payload, with the version.
    pub fn data(&self) -> Result<Value, serde_json::Error> {
        let mut data = self.payload.data()?;
        if let (Some(v), Value::Object(map)) = (self.version, &mut data) {
            map.insert("version".into(), Value::from(v));
        }
        Ok(data)
    }
}

impl From<Wire> for Event {
    fn from(w: Wire) -> Event {
        let version = serde_json::from_value::<Stamp>(w.data.clone())
            .ok()
            .and_then(|s| s.version);
        Event {
            id: w.id,
            at_ms: w.at_ms,
            version,
            payload: Payload::read(w.kind, w.data, w.rollout_id.is_some()),
            actor: w.actor,
            rollout: w.rollout,
            rollout_id: w.rollout_id,
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            id: self.id,
            at_ms: self.at_ms,
            rollout: self.rollout.clone(),
            rollout_id: self.rollout_id,
            kind: self.kind().to_owned(),
            actor: self.actor.clone(),
            data: self.data().map_err(serde::ser::Error::custom)?,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        Wire::deserialize(d).map(Event::from)
    }
}

// === impl Payload ===

impl Payload {
    pub fn kind(&self) -> &str {
        match self {
            Payload::Created(_) => "created",
            Payload::Moved(kind, _) => kind.as_str(),
            Payload::Analysis(_) => "analysis",
            Payload::KillSwitch(_) => "kill_switch",
            Payload::Gate(_) => "gate",
            Payload::Alert(_) => "alert",
            Payload::Key(_) => "key",
            Payload::Unread { kind, .. } => kind,
        }
    }

    /// Who acted, as far as an event written before actors were recorded tells: then every
    /// call of the API was the admin token's.
    fn legacy_actor(&self) -> &'static str {
        match self {
            Payload::Created(_) | Payload::KillSwitch(_) | Payload::Alert(_) | Payload::Key(_) => {
                actor::ADMIN
            }
            Payload::Analysis(_) => actor::ANALYSIS,
            Payload::Gate(_) => actor::GATE,
            Payload::Moved(kind, m) => report::legacy_actor(*kind, &m.reason),
            Payload::Unread { .. } => actor::SYSTEM,
        }
    }

    fn data(&self) -> Result<Value, serde_json::Error> {
        match self {
            Payload::Created(c) => serde_json::to_value(c),
            Payload::Moved(_, m) => serde_json::to_value(m),
            Payload::Analysis(a) => serde_json::to_value(a),
            Payload::KillSwitch(k) => serde_json::to_value(k),
            Payload::Gate(g) => serde_json::to_value(g),
            Payload::Alert(a) => serde_json::to_value(a),
            Payload::Key(k) => serde_json::to_value(k),
            Payload::Unread { data, .. } => Ok(data.clone()),
        }
    }

    /// The typed payload of a stored `kind` and `data`, or the two as they are. A rollout's
    /// `kill_switch` is a transition; the global one has no rollout.
    fn read(kind: String, data: Value, of_rollout: bool) -> Payload {
        fn typed<T: serde::de::DeserializeOwned>(data: &Value) -> Option<T> {
            serde_json::from_value(data.clone()).ok()
        }
        let found = match (kind.as_str(), Move::parse(&kind)) {
            ("created", _) => typed(&data).map(Payload::Created),
            ("analysis", _) => typed(&data).map(Payload::Analysis),
            ("gate", _) => typed(&data).map(Payload::Gate),
            ("alert", _) => typed(&data).map(Payload::Alert),
            ("kill_switch", _) if !of_rollout => typed(&data).map(Payload::KillSwitch),
            ("key", _) if !of_rollout => typed(&data).map(Payload::Key),
            (_, Some(m)) => typed(&data).map(|d| Payload::Moved(m, d)),
            _ => None,
        };
        found.unwrap_or(Payload::Unread { kind, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::policy::Severity;
    use crate::analysis::Verdict;
    use serde_json::json;

    fn event(rollout_id: Option<i64>, payload: Payload) -> Event {
        Event {
            id: 7,
            at_ms: 1000,
            rollout: rollout_id.map(|_| "web".into()),
            rollout_id,
            version: Some(3),
            actor: "ci".into(),
            payload,
        }
    }

    /// The JSON of `/v1/audit`, the SSE `data:` and (kind, data) the store's columns.
    fn wire(e: &Event) -> Value {
        let v = serde_json::to_value(e).unwrap();
        let back: Event = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(&back, e, "{v}");
        v
    }

    #[test]
    fn created_on_the_wire() {
        let e = event(
            Some(1),
            Payload::Created(Created {
                state: State::Pending,
                steps: 4,
                reason: "created by operator".into(),
            }),
        );
        assert_eq!(
            wire(&e),
            json!({"id": 7, "at_ms": 1000, "rollout": "web", "rollout_id": 1, "kind": "created", "actor": "ci",
                   "data": {"state": "pending", "steps": 4, "reason": "created by operator", "version": 3}})
        );
    }

    #[test]
    fn every_transition_on_the_wire() {
        let kinds = [
            "started",
            "step",
            "paused",
            "resumed",
            "promoted",
            "weight",
            "kill_switch",
            "aborted",
            "rolled_back",
            "retried",
            "completed",
            "timed_out",
        ];
        assert_eq!(Move::ALL.map(Move::as_str), kinds);
        for m in Move::ALL {
            let e = event(
                Some(1),
                Payload::Moved(
                    m,
                    Moved {
                        from: State::Progressing,
                        to: State::Paused,
                        step: 1,
                        weight: 12.5,
                        mirror: None,
                        kill_switch: false,
                        reason: "why".into(),
                    },
                ),
            );
            assert_eq!(
                wire(&e),
                json!({"id": 7, "at_ms": 1000, "rollout": "web", "rollout_id": 1, "kind": m.as_str(), "actor": "ci",
                       "data": {"from": "progressing", "to": "paused", "step": 1, "weight": 12.5,
                                "mirror": null, "kill_switch": false, "reason": "why", "version": 3}}),
                "{m}"
            );
        }
    }

    #[test]
    fn an_analysis_run_on_the_wire() {
        let e = event(
            Some(1),
            Payload::Analysis(AnalysisRun {
                step: 0,
                weight: 10.0,
                subject: "canary".into(),
                decision: Action::RollBack,
                reason: "critical guardrail error-rate failed".into(),
                checks: vec![Check {
                    guardrail: "error-rate".into(),
                    kind: "error_rate".into(),
                    severity: Severity::Critical,
                    verdict: Verdict::Fail,
                    observed: Some(20.0),
                    limit: Some(1.0),
                    text: "canary error rate 20%".into(),
                }],
                observed: json!({"increment": {"covered_ms": 10000}}),
            }),
        );
        assert_eq!(
            wire(&e),
            json!({"id": 7, "at_ms": 1000, "rollout": "web", "rollout_id": 1, "kind": "analysis", "actor": "ci",
                   "data": {"step": 0, "weight": 10.0, "subject": "canary", "decision": "roll_back",
                            "reason": "critical guardrail error-rate failed",
                            "checks": [{"guardrail": "error-rate", "kind": "error_rate",
                                        "severity": "critical", "verdict": "fail", "observed": 20.0,
                                        "limit": 1.0, "text": "canary error rate 20%"}],
                            "observed": {"increment": {"covered_ms": 10000}}, "version": 3}})
        );
        let actions = [
            Action::Pass,
            Action::Hold,
            Action::RollBack,
            Action::Pause,
            Action::Resume,
        ];
        for a in actions {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }

    #[test]
    fn the_global_kill_switch_on_the_wire() {
        let e = event(
            None,
            Payload::KillSwitch(KillSwitch {
                on: true,
                reason: "global kill switch on by operator".into(),
            }),
        );
        assert_eq!(
            wire(&e),
            json!({"id": 7, "at_ms": 1000, "kind": "kill_switch", "actor": "ci",
                   "data": {"on": true, "reason": "global kill switch on by operator", "version": 3}})
        );
    }

    #[test]
    fn rows_it_cannot_read_are_kept_as_stored() {
        // A rollout's kill switch without its transition fields, an unknown kind, bad JSON.
        for (rollout_id, kind, data) in [
            (Some(1), "kill_switch", r#"{"on":true,"version":2}"#),
            (None, "snapshot_pruned", r#"{"version":2}"#),
            (Some(1), "created", "{not json"),
        ] {
            let e = Event::from_row(1, 5, None, rollout_id, kind.into(), data, None);
            assert!(
                matches!(&e.payload, Payload::Unread { kind: k, .. } if k == kind),
                "{e:?}"
            );
            let v = wire(&e);
            assert_eq!(v["kind"], kind);
            let stored = serde_json::from_str(data).unwrap_or_else(|_| json!(data));
            assert_eq!(v["data"], stored);
            assert_eq!(v["actor"], "system");
        }
    }

    #[test]
    fn a_row_names_its_actor_and_an_older_row_is_read_for_one() {
        let moved = r#"{"from":"paused","to":"progressing","step":1,"weight":10.0,"mirror":null,"kill_switch":false,"reason":"resumed by operator"}"#;
        let e = Event::from_row(
            1,
            5,
            None,
            Some(1),
            "resumed".into(),
            moved,
            Some("ci".into()),
        );
        assert_eq!(wire(&e)["actor"], "ci");
        // Before actors were stored, every call of the API was the admin token's.
        for (kind, data, by) in [
            ("resumed", moved, "admin"),
            (
                "analysis",
                r#"{"step":0,"weight":10.0,"subject":"canary","decision":"pass","reason":"ok","checks":[],"observed":null}"#,
                "analysis",
            ),
            (
                "created",
                r#"{"state":"pending","steps":2,"reason":"created by operator"}"#,
                "admin",
            ),
        ] {
            let e = Event::from_row(1, 5, None, Some(1), kind.into(), data, None);
            assert_eq!(e.actor, by, "{kind}");
        }
    }
}
