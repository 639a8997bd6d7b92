//! The durable store (SQLite): rollouts, their steps, transitions and audit events, each
//! change written in one transaction together with the snapshot version it produced.

use crate::analysis::{Check, Memory};
use crate::clock::Millis;
use crate::machine::{Runtime, State};
use crate::spec::{Pause, Plan, RolloutSpec};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;

/// Applied in order; `PRAGMA user_version` is the number applied. Never edit one that shipped:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('version', 0), ('kill_switch', 0);
CREATE TABLE rollouts (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL,
    weight REAL NOT NULL,
    mirror REAL,
    kill_switch INTEGER NOT NULL,
    step_started_ms INTEGER NOT NULL,
    step_ends_ms INTEGER,
    paused_remaining_ms INTEGER,
    deadline_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE steps (
    rollout TEXT NOT NULL REFERENCES rollouts(name),
    idx INTEGER NOT NULL,
    weight REAL NOT NULL,
    mirror REAL,
    pause_ms INTEGER,
    PRIMARY KEY (rollout, idx)
);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL REFERENCES rollouts(name),
    at_ms INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    step INTEGER NOT NULL,
    weight REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX transitions_by_rollout ON transitions (rollout, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    rollout TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_rollout ON events (rollout, id);
"#,
    r#"
ALTER TABLE rollouts ADD COLUMN analysis TEXT NOT NULL DEFAULT '{}';
CREATE TABLE checks (
    event INTEGER NOT NULL REFERENCES events(id),
    rollout TEXT NOT NULL REFERENCES rollouts(name),
    at_ms INTEGER NOT NULL,
    guardrail TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    verdict TEXT NOT NULL,
    observed REAL,
    limit_value REAL,
    text TEXT NOT NULL,
    PRIMARY KEY (event, guardrail)
);
CREATE INDEX checks_by_rollout ON checks (rollout, event);
"#,
];

pub struct Store {
    conn: Connection,
}

#[derive(Debug)]
pub struct StoreError(pub String);

/// Everything the controller needs after a start.
pub struct Loaded {
    pub version: u64,
    pub kill_switch: bool,
    pub rollouts: Vec<(RolloutSpec, Runtime)>,
}

/// An audit event; its id orders every event ever written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub at_ms: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    pub kind: String,
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub id: i64,
    pub at_ms: Millis,
    pub from: String,
    pub to: String,
    pub step: usize,
    pub weight: f64,
    pub reason: String,
}

/// One change, written in one transaction.
pub struct Change<'a> {
    pub at_ms: Millis,
    pub rollout: Option<RolloutWrite<'a>>,
    /// A new position of the global kill switch.
    pub kill_switch: Option<bool>,
    /// The change alters what the filters are served.
    pub bump_version: bool,
    pub kind: &'a str,
    /// The event's payload; `version` is added.
    pub data: Map<String, Value>,
    /// An analysis run's checks, one row each, tied to this change's event.
    pub checks: &'a [Check],
}

pub struct RolloutWrite<'a> {
    pub spec: &'a RolloutSpec,
    pub plan: &'a Plan,
    pub runtime: &'a Runtime,
    /// A new rollout: insert it and its steps.
    pub created: bool,
    /// The state or step changed: record a transition from this state.
    pub transition: Option<(State, &'a str)>,
}

// === impl StoreError ===

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(e.to_string())
    }
}

// === impl Store ===

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        // WAL lets readers run beside the writer; FULL makes a commit survive power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let applied: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(0);
        if applied > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "the database has schema version {applied}, newer than this binary's {}",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// A cheap round trip, for readiness.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let version = meta(&self.conn, "version")?;
        let kill_switch = meta(&self.conn, "kill_switch")? != 0;
        let mut stmt = self.conn.prepare(
            "SELECT name, spec, state, step, weight, mirror, kill_switch, step_started_ms,
                    step_ends_ms, paused_remaining_ms, deadline_ms, analysis
             FROM rollouts ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, f64>(4)?,
                r.get::<_, Option<f64>>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<i64>>(9)?,
                r.get::<_, Option<i64>>(10)?,
                r.get::<_, String>(11)?,
            ))
        })?;
        let mut rollouts = Vec::new();
        for row in rows {
            let (
                name,
                spec,
                state,
                step,
                weight,
                mirror,
                kill,
                started,
                ends,
                remaining,
                deadline,
                analysis,
            ) = row?;
            let spec: RolloutSpec = serde_json::from_str(&spec)
                .map_err(|e| StoreError(format!("rollout {name:?}: stored spec: {e}")))?;
            let state = State::parse(&state)
                .ok_or_else(|| StoreError(format!("rollout {name:?}: unknown state {state:?}")))?;
            let analysis: Memory = serde_json::from_str(&analysis)
                .map_err(|e| StoreError(format!("rollout {name:?}: stored analysis: {e}")))?;
            let runtime = Runtime {
                state,
                step: usize::try_from(step).unwrap_or(0),
                weight,
                mirror,
                kill_switch: kill,
                step_started_ms: started,
                step_ends_ms: ends,
                paused_remaining_ms: remaining,
                deadline_ms: deadline,
                analysis,
            };
            rollouts.push((spec, runtime));
        }
        Ok(Loaded {
            version: u64::try_from(version).unwrap_or(0),
            kill_switch,
            rollouts,
        })
    }

    /// Writes a change and its audit event atomically; returns the event and the version.
    pub fn commit(&mut self, change: Change<'_>) -> Result<(Event, u64), StoreError> {
        let tx = self.conn.transaction()?;
        let mut version = meta(&tx, "version")?;
        if change.bump_version {
            version += 1;
            set_meta(&tx, "version", version)?;
        }
        if let Some(on) = change.kill_switch {
            set_meta(&tx, "kill_switch", i64::from(on))?;
        }
        let mut rollout_name = None;
        if let Some(w) = &change.rollout {
            write_rollout(&tx, w, change.at_ms)?;
            rollout_name = Some(w.spec.name.clone());
        }
        let mut data = change.data;
        data.insert("version".into(), Value::from(version));
        let data = Value::Object(data);
        tx.execute(
            "INSERT INTO events (at_ms, rollout, kind, data) VALUES (?1, ?2, ?3, ?4)",
            params![
                change.at_ms,
                rollout_name,
                change.kind,
                serde_json::to_string(&data)?
            ],
        )?;
        let id = tx.last_insert_rowid();
        if let Some(name) = &rollout_name {
            for c in change.checks {
                tx.execute(
                    "INSERT INTO checks (event, rollout, at_ms, guardrail, kind, severity, verdict,
                        observed, limit_value, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    params![
                        id,
                        name,
                        change.at_ms,
                        c.guardrail,
                        c.kind,
                        c.severity.as_str(),
                        c.verdict.as_str(),
                        c.observed,
                        c.limit,
                        c.text
                    ],
                )?;
            }
        }
        tx.commit()?;
        let event = Event {
            id,
            at_ms: change.at_ms,
            rollout: rollout_name,
            kind: change.kind.to_owned(),
            data,
        };
        Ok((event, u64::try_from(version).unwrap_or(0)))
    }

    /// Events with an id above `after`, oldest first.
    pub fn events(
        &self,
        after: i64,
        rollout: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, rollout, kind, data FROM events
             WHERE id > ?1 AND (?2 IS NULL OR rollout = ?2) ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, rollout, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, at_ms, rollout, kind, data) = row?;
            out.push(Event {
                id,
                at_ms,
                rollout,
                kind,
                data: serde_json::from_str(&data)?,
            });
        }
        Ok(out)
    }

    /// The latest `limit` events of a rollout, oldest first.
    pub fn latest_events(&self, rollout: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        let first: i64 = self.conn.query_row(
            "SELECT COALESCE(MIN(id), 1) FROM (SELECT id FROM events WHERE rollout = ?1
                 ORDER BY id DESC LIMIT ?2)",
            params![rollout, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| r.get(0),
        )?;
        self.events(first - 1, Some(rollout), limit)
    }

    /// Checks of a rollout's analysis runs, by verdict (`pass`, `fail`, `no_data`).
    pub fn check_count(&self, rollout: &str, verdict: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM checks WHERE rollout = ?1 AND verdict = ?2",
            params![rollout, verdict],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The latest `limit` transitions of a rollout, oldest first.
    pub fn transitions(&self, rollout: &str, limit: usize) -> Result<Vec<Transition>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, from_state, to_state, step, weight, reason FROM transitions
             WHERE rollout = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![rollout, limit], |r| {
            Ok(Transition {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                from: r.get(2)?,
                to: r.get(3)?,
                step: usize::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                weight: r.get(5)?,
                reason: r.get(6)?,
            })
        })?;
        let mut out = rows.collect::<Result<Vec<_>, _>>()?;
        out.reverse();
        Ok(out)
    }
}

fn write_rollout(
    tx: &Transaction<'_>,
    w: &RolloutWrite<'_>,
    now: Millis,
) -> Result<(), StoreError> {
    let rt = w.runtime;
    let name = &w.spec.name;
    let step = i64::try_from(rt.step).unwrap_or(i64::MAX);
    let analysis = serde_json::to_string(&rt.analysis)?;
    if w.created {
        tx.execute(
            "INSERT INTO rollouts (name, spec, state, step, weight, mirror, kill_switch,
                step_started_ms, step_ends_ms, paused_remaining_ms, deadline_ms, created_ms, updated_ms,
                analysis)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)",
            params![
                name,
                serde_json::to_string(w.spec)?,
                rt.state.as_str(),
                step,
                rt.weight,
                rt.mirror,
                rt.kill_switch,
                rt.step_started_ms,
                rt.step_ends_ms,
                rt.paused_remaining_ms,
                rt.deadline_ms,
                now,
                analysis
            ],
        )?;
        for (i, s) in w.plan.steps.iter().enumerate() {
            let pause_ms = match s.pause {
                Pause::For(d) => Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                Pause::UntilPromoted => None,
            };
            tx.execute(
                "INSERT INTO steps (rollout, idx, weight, mirror, pause_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, i64::try_from(i).unwrap_or(i64::MAX), s.weight, s.mirror, pause_ms],
            )?;
        }
    } else {
        let n = tx.execute(
            "UPDATE rollouts SET state = ?2, step = ?3, weight = ?4, mirror = ?5, kill_switch = ?6,
                step_started_ms = ?7, step_ends_ms = ?8, paused_remaining_ms = ?9, deadline_ms = ?10,
                updated_ms = ?11, analysis = ?12
             WHERE name = ?1",
            params![
                name,
                rt.state.as_str(),
                step,
                rt.weight,
                rt.mirror,
                rt.kill_switch,
                rt.step_started_ms,
                rt.step_ends_ms,
                rt.paused_remaining_ms,
                rt.deadline_ms,
                now,
                analysis
            ],
        )?;
        if n != 1 {
            return Err(StoreError(format!("rollout {name:?} is not in the store")));
        }
    }
    if let Some((from, reason)) = w.transition {
        tx.execute(
            "INSERT INTO transitions (rollout, at_ms, from_state, to_state, step, weight, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                now,
                from.as_str(),
                rt.state.as_str(),
                step,
                rt.weight,
                reason
            ],
        )?;
    }
    Ok(())
}

fn meta(conn: &Connection, key: &str) -> Result<i64, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn set_meta(conn: &Connection, key: &str, value: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Format;

    #[test]
    fn migrates_writes_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (spec, plan) =
            RolloutSpec::parse(b"name: a\nsteps: [{weight: 5, pause: 1m}]", Format::Yaml).unwrap();
        let rt = Runtime::new(&plan, 10);
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), 2);
            let (ev, v) = s
                .commit(Change {
                    at_ms: 10,
                    rollout: Some(RolloutWrite {
                        spec: &spec,
                        plan: &plan,
                        runtime: &rt,
                        created: true,
                        transition: Some((State::Pending, "created")),
                    }),
                    kill_switch: Some(true),
                    bump_version: true,
                    kind: "created",
                    data: Map::new(),
                    checks: &[],
                })
                .unwrap();
            assert_eq!((ev.id, v), (1, 1));
            assert_eq!(ev.data["version"], 1);
        }
        // Reopening applies no migration twice and finds everything.
        let s = Store::open(&path).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!((loaded.version, loaded.kill_switch), (1, true));
        assert_eq!(loaded.rollouts, vec![(spec, rt)]);
        assert_eq!(s.events(0, Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.events(1, None, 10).unwrap().len(), 0);
        assert_eq!(s.transitions("a", 5).unwrap().len(), 1);
        assert_eq!(s.event_count().unwrap(), 1);
    }
}
