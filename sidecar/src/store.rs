//! The durable store (SQLite): rollouts, their steps, transitions and audit events, each
//! change written in one transaction together with the snapshot version it produced.
//!
//! Every rollout ever created is one row with its own id (a release); a name is used again
//! once the rollout that had it is finished, and finished ones stay as the archive.
//!
//! The audit (events, their checks, transitions) is bounded by [`Store::prune`]; a rollout
//! row is never deleted, and neither is anything of an unfinished rollout.

use crate::analysis::Memory;
use crate::auth::Scope;
use crate::clock::Millis;
pub use crate::event::Event;
use crate::event::Payload;
use crate::keys::StoredKey;
use crate::machine::{Holds, Runtime, State};
use crate::notify::{Delivery, DeliveryState, NewDelivery, ReceiverSpec};
use crate::spec::{Pause, Plan, RolloutSpec};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};
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
    // Releases: a rollout row per release, keyed by id, so a name can be used again once its
    // rollout is finished. At most one unfinished rollout per name, enforced by an index.
    r#"
CREATE TABLE rollouts_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
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
    updated_ms INTEGER NOT NULL,
    analysis TEXT NOT NULL DEFAULT '{}',
    finished_ms INTEGER
);
INSERT INTO rollouts_v3 (name, spec, state, step, weight, mirror, kill_switch, step_started_ms,
        step_ends_ms, paused_remaining_ms, deadline_ms, created_ms, updated_ms, analysis, finished_ms)
    SELECT name, spec, state, step, weight, mirror, kill_switch, step_started_ms, step_ends_ms,
        paused_remaining_ms, deadline_ms, created_ms, updated_ms, analysis,
        CASE WHEN state IN ('rolled_back', 'aborted', 'timed_out') THEN updated_ms END
    FROM rollouts ORDER BY created_ms, name;
CREATE TABLE steps_v3 (
    rollout_id INTEGER NOT NULL REFERENCES rollouts_v3(id),
    idx INTEGER NOT NULL,
    weight REAL NOT NULL,
    mirror REAL,
    pause_ms INTEGER,
    PRIMARY KEY (rollout_id, idx)
);
INSERT INTO steps_v3 SELECT r.id, s.idx, s.weight, s.mirror, s.pause_ms
    FROM steps s JOIN rollouts_v3 r ON r.name = s.rollout;
CREATE TABLE transitions_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id INTEGER NOT NULL REFERENCES rollouts_v3(id),
    rollout TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    step INTEGER NOT NULL,
    weight REAL NOT NULL,
    reason TEXT NOT NULL
);
INSERT INTO transitions_v3 SELECT t.id, r.id, t.rollout, t.at_ms, t.from_state, t.to_state,
        t.step, t.weight, t.reason
    FROM transitions t JOIN rollouts_v3 r ON r.name = t.rollout;
CREATE TABLE checks_v3 (
    event INTEGER NOT NULL REFERENCES events(id),
    rollout_id INTEGER NOT NULL REFERENCES rollouts_v3(id),
    rollout TEXT NOT NULL,
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
INSERT INTO checks_v3 SELECT c.event, r.id, c.rollout, c.at_ms, c.guardrail, c.kind,
        c.severity, c.verdict, c.observed, c.limit_value, c.text
    FROM checks c JOIN rollouts_v3 r ON r.name = c.rollout;
ALTER TABLE events ADD COLUMN rollout_id INTEGER;
UPDATE events SET rollout_id = (SELECT id FROM rollouts_v3 r WHERE r.name = events.rollout);
DROP TABLE checks;
DROP TABLE transitions;
DROP TABLE steps;
DROP TABLE rollouts;
ALTER TABLE rollouts_v3 RENAME TO rollouts;
ALTER TABLE steps_v3 RENAME TO steps;
ALTER TABLE transitions_v3 RENAME TO transitions;
ALTER TABLE checks_v3 RENAME TO checks;
CREATE UNIQUE INDEX rollouts_unfinished_name ON rollouts (name) WHERE finished_ms IS NULL;
CREATE INDEX rollouts_by_name ON rollouts (name, id);
CREATE INDEX transitions_by_rollout ON transitions (rollout_id, id);
CREATE INDEX checks_by_rollout ON checks (rollout, event);
CREATE INDEX events_by_rollout_id ON events (rollout_id, id);
"#,
    // What analysis sources must remember across a restart (the envoy source: each admin's
    // last scrape), so the first run after a start has a window.
    r#"
CREATE TABLE source_memory (key TEXT PRIMARY KEY, value TEXT NOT NULL, at_ms INTEGER NOT NULL);
"#,
    // What holds a rollout besides its pause: gates that have not let it move, alerts.
    r#"
ALTER TABLE rollouts ADD COLUMN holds TEXT NOT NULL DEFAULT '{}';
"#,
    // Notifications: receivers for every rollout, and the outbox. A delivery is stored (with
    // the cursor past its event, in one transaction) before it is sent; a database that
    // predates them starts notifying from now, not from its history.
    r#"
CREATE TABLE receivers (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL,
    rollout TEXT,
    rollout_id INTEGER,
    receiver TEXT NOT NULL,
    topic TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    content_type TEXT NOT NULL,
    signature TEXT,
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff_ms INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    last_error TEXT,
    created_ms INTEGER NOT NULL,
    delivered_ms INTEGER
);
CREATE INDEX deliveries_waiting ON deliveries (receiver, id) WHERE state IN ('pending', 'retrying');
CREATE INDEX deliveries_by_rollout ON deliveries (rollout, id);
CREATE TABLE notify_cursor (id INTEGER PRIMARY KEY CHECK (id = 1), after INTEGER NOT NULL);
INSERT INTO notify_cursor VALUES (1, (SELECT COALESCE(MAX(id), 0) FROM events));
"#,
    // Named API keys: the SHA-256 of each secret, never the secret. A revoked key keeps its
    // row, so its name is never used again and the audit's names stay unambiguous. No rate
    // or burst: the defaults.
    r#"
CREATE TABLE keys (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    rate REAL,
    burst INTEGER,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
"#,
    // Who acted, per event: a key's name or `analysis`, `schedule`, `deadline`, `gate`.
    // Older rows have none; reading them infers it as reports did ([`Event::from_row`]).
    r#"
ALTER TABLE events ADD COLUMN actor TEXT;
"#,
];

/// The columns a [`Release`] is read from, in [`release_row`]'s order.
const RELEASE_COLUMNS: &str = "id, name, spec, state, step, weight, mirror, kill_switch,
    step_started_ms, step_ends_ms, paused_remaining_ms, deadline_ms, analysis, created_ms,
    finished_ms, holds";

pub struct Store {
    conn: Connection,
}

#[derive(Debug)]
pub struct StoreError(pub String);

/// Everything the controller needs after a start.
pub struct Loaded {
    pub version: u64,
    pub kill_switch: bool,
    /// The unfinished rollouts, oldest first.
    pub rollouts: Vec<Release>,
}

/// One rollout as stored: a release of its name, with its own id.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub id: i64,
    pub spec: RolloutSpec,
    pub runtime: Runtime,
    pub created_ms: Millis,
    /// When it finished (completed, rolled back, aborted, timed out) and was archived.
    pub finished_ms: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transition {
    pub id: i64,
    pub at_ms: Millis,
    pub from: String,
    pub to: String,
    pub step: usize,
    pub weight: f64,
    pub reason: String,
}

/// What one [`Store::prune`] deleted, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub checks: u64,
    pub transitions: u64,
    /// Notifications delivered or given up before the cutoff (waiting ones are never pruned).
    pub deliveries: u64,
}

/// Audit rows that may be pruned: those of archived (finished) rollouts, and global events
/// (the kill switch). `{t}` is the table's alias.
const PRUNABLE: &str = "({t}.rollout_id IS NULL OR {t}.rollout_id IN
    (SELECT id FROM rollouts WHERE finished_ms IS NOT NULL))";

/// Each release keeps its last transition: the history shows it as the release's reason.
const NOT_LAST_TRANSITION: &str = "t.id < (SELECT MAX(l.id) FROM transitions l
    WHERE l.rollout_id = t.rollout_id)";

/// One change, written in one transaction.
pub struct Change<'a> {
    pub at_ms: Millis,
    pub rollout: Option<RolloutWrite<'a>>,
    /// A new position of the global kill switch.
    pub kill_switch: Option<bool>,
    /// The change alters what the filters are served.
    pub bump_version: bool,
    /// The event's payload; an analysis run's checks also go in a row each, tied to the event.
    pub payload: Payload,
    /// Who acted: a key's name, or one of [`crate::event::actor`]'s.
    pub actor: &'a str,
    /// A key made or revoked, with the event that says so.
    pub key: Option<KeyWrite<'a>>,
}

pub enum KeyWrite<'a> {
    /// A new key; its name must be new (the caller checks, under the controller's lock).
    Insert(&'a StoredKey),
    /// Marks a key revoked at the change's time.
    Revoke(&'a str),
}

pub struct RolloutWrite<'a> {
    /// `None`: a new rollout; it is inserted with its steps and gets an id (the event's).
    pub id: Option<i64>,
    pub spec: &'a RolloutSpec,
    pub plan: &'a Plan,
    pub runtime: &'a Runtime,
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Off while migrating: a migration rebuilds tables that others reference, and SQLite
        // ignores this pragma inside the migration's transaction.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let mut store = Store { conn };
        store.migrate()?;
        store.conn.pragma_update(None, "foreign_keys", "ON")?;
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
        let rollouts = self.releases(
            &format!(
                "SELECT {RELEASE_COLUMNS} FROM rollouts WHERE finished_ms IS NULL ORDER BY id"
            ),
            [],
        )?;
        Ok(Loaded {
            version: u64::try_from(version).unwrap_or(0),
            kill_switch,
            rollouts,
        })
    }

    /// One release by id.
    pub fn release(&self, id: i64) -> Result<Option<Release>, StoreError> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM rollouts WHERE id = ?1");
        Ok(self.releases(&sql, [id])?.pop())
    }

    /// The latest release of a name, finished or not.
    pub fn latest_release(&self, name: &str) -> Result<Option<Release>, StoreError> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM rollouts WHERE name = ?1 ORDER BY id DESC LIMIT 1"
        );
        Ok(self.releases(&sql, [name])?.pop())
    }

    /// Every release, newest first, up to `limit`.
    /// Releases newest first, of one name or of all, at most `limit`.
    pub fn history(&self, name: Option<&str>, limit: usize) -> Result<Vec<Release>, StoreError> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM rollouts WHERE ?1 IS NULL OR name = ?1 ORDER BY id DESC LIMIT ?2"
        );
        self.releases(
            &sql,
            rusqlite::params![name, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    fn releases(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Release>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, release_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
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
        match change.key {
            Some(KeyWrite::Insert(k)) => {
                tx.execute(
                    "INSERT INTO keys (name, scope, hash, rate, burst, created_ms, revoked_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        k.name,
                        k.scope.as_str(),
                        k.hash,
                        k.rate,
                        k.burst,
                        k.created_ms,
                        k.revoked_ms
                    ],
                )?;
            }
            Some(KeyWrite::Revoke(name)) => {
                tx.execute(
                    "UPDATE keys SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
                    params![name, change.at_ms],
                )?;
            }
            None => {}
        }
        let mut rollout_name = None;
        let mut rollout_id = None;
        if let Some(w) = &change.rollout {
            rollout_id = Some(write_rollout(&tx, w, change.at_ms)?);
            rollout_name = Some(w.spec.name.clone());
        }
        let mut event = Event {
            id: 0,
            at_ms: change.at_ms,
            rollout: rollout_name,
            rollout_id,
            version: Some(u64::try_from(version).unwrap_or(0)),
            actor: change.actor.to_owned(),
            payload: change.payload,
        };
        tx.execute(
            "INSERT INTO events (at_ms, rollout, rollout_id, kind, data, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                event.at_ms,
                event.rollout,
                event.rollout_id,
                event.kind(),
                serde_json::to_string(&event.data()?)?,
                event.actor
            ],
        )?;
        event.id = tx.last_insert_rowid();
        if let (Some(name), Some(rid), Payload::Analysis(run)) =
            (&event.rollout, event.rollout_id, &event.payload)
        {
            for c in &run.checks {
                tx.execute(
                    "INSERT INTO checks (event, rollout_id, rollout, at_ms, guardrail, kind,
                        severity, verdict, observed, limit_value, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![
                        event.id,
                        rid,
                        name,
                        event.at_ms,
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
            "SELECT id, at_ms, rollout, rollout_id, kind, data, actor FROM events
             WHERE id > ?1 AND (?2 IS NULL OR rollout = ?2) ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after, rollout, limit], event_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// The latest `limit` events of one release, oldest first.
    pub fn latest_events(&self, rollout_id: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, rollout, rollout_id, kind, data, actor FROM events
             WHERE rollout_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![rollout_id, limit], event_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        out.reverse();
        Ok(out)
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

    /// What a source stored under `key`, and when.
    pub fn source_memory(&self, key: &str) -> Result<Option<(String, Millis)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value, at_ms FROM source_memory WHERE key = ?1")?;
        let mut rows = stmt.query([key])?;
        Ok(match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?)),
            None => None,
        })
    }

    pub fn remember_for_source(
        &self,
        key: &str,
        value: &str,
        at_ms: Millis,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO source_memory (key, value, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, at_ms = excluded.at_ms",
            rusqlite::params![key, value, at_ms],
        )?;
        Ok(())
    }

    pub fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The id of the newest event (0 before any).
    pub fn last_event_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Deletes, in one transaction, the audit of rollouts that finished before `before_ms`
    /// and global events from before it; then the oldest prunable events (with their checks)
    /// and transitions while a table holds more than `max_rows`. Nothing of an unfinished
    /// rollout is deleted, so the count can stay above `max_rows`. Ids are `AUTOINCREMENT`:
    /// a pruned id is never given out again, and event streams resume past it.
    pub fn prune(&mut self, before_ms: Millis, max_rows: u64) -> Result<Pruned, StoreError> {
        let events = PRUNABLE.replace("{t}", "e");
        let transitions = PRUNABLE.replace("{t}", "t");
        let old = "(SELECT id FROM rollouts WHERE finished_ms IS NOT NULL AND finished_ms < ?1)";
        let aged_events = format!(
            "SELECT e.id FROM events e
             WHERE (e.rollout_id IS NULL AND e.at_ms < ?1) OR e.rollout_id IN {old}"
        );
        let tx = self.conn.transaction()?;
        let mut pruned = Pruned::default();
        pruned.checks += rows(tx.execute(
            &format!("DELETE FROM checks WHERE event IN ({aged_events})"),
            [before_ms],
        )?);
        pruned.events += rows(tx.execute(
            &format!("DELETE FROM events WHERE id IN ({aged_events})"),
            [before_ms],
        )?);
        pruned.transitions += rows(tx.execute(
            &format!(
                "DELETE FROM transitions AS t WHERE t.rollout_id IN {old} AND {NOT_LAST_TRANSITION}"
            ),
            [before_ms],
        )?);
        pruned.deliveries += rows(tx.execute(
            "DELETE FROM deliveries WHERE state IN ('delivered', 'failed') AND created_ms < ?1",
            [before_ms],
        )?);
        let excess = |table: &str| -> Result<i64, StoreError> {
            let n: i64 =
                tx.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(
                n.saturating_sub(i64::try_from(max_rows).unwrap_or(i64::MAX))
                    .max(0),
            )
        };
        let over = excess("events")?;
        if over > 0 {
            let oldest = format!("SELECT e.id FROM events e WHERE {events} ORDER BY e.id LIMIT ?1");
            pruned.checks += rows(tx.execute(
                &format!("DELETE FROM checks WHERE event IN ({oldest})"),
                [over],
            )?);
            pruned.events += rows(tx.execute(
                &format!("DELETE FROM events WHERE id IN ({oldest})"),
                [over],
            )?);
        }
        let over = excess("transitions")?;
        if over > 0 {
            pruned.transitions += rows(tx.execute(
                &format!(
                    "DELETE FROM transitions WHERE id IN (SELECT t.id FROM transitions t
                     WHERE {transitions} AND {NOT_LAST_TRANSITION} ORDER BY t.id LIMIT ?1)"
                ),
                [over],
            )?);
        }
        tx.commit()?;
        Ok(pruned)
    }

    /// The latest `limit` transitions of a release, oldest first.
    pub fn transitions(
        &self,
        rollout_id: i64,
        limit: usize,
    ) -> Result<Vec<Transition>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at_ms, from_state, to_state, step, weight, reason FROM transitions
             WHERE rollout_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![rollout_id, limit], |r| {
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

/// Inserts or updates a release; returns its id.
fn write_rollout(
    tx: &Transaction<'_>,
    w: &RolloutWrite<'_>,
    now: Millis,
) -> Result<i64, StoreError> {
    let rt = w.runtime;
    let name = &w.spec.name;
    let step = i64::try_from(rt.step).unwrap_or(i64::MAX);
    let analysis = serde_json::to_string(&rt.analysis)?;
    let holds = serde_json::to_string(&rt.holds)?;
    let finished = rt.state.is_finished().then_some(now);
    let id = match w.id {
        None => {
            tx.execute(
                "INSERT INTO rollouts (name, spec, state, step, weight, mirror, kill_switch,
                    step_started_ms, step_ends_ms, paused_remaining_ms, deadline_ms, created_ms,
                    updated_ms, analysis, finished_ms, holds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13, ?14, ?15)",
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
                    analysis,
                    finished,
                    holds
                ],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError(format!(
                    "an unfinished rollout named {name:?} is already stored"
                )),
                _ => e.into(),
            })?;
            let id = tx.last_insert_rowid();
            for (i, s) in w.plan.steps.iter().enumerate() {
                let pause_ms = match s.pause {
                    Pause::For(d) => Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    Pause::UntilPromoted => None,
                };
                tx.execute(
                    "INSERT INTO steps (rollout_id, idx, weight, mirror, pause_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        i64::try_from(i).unwrap_or(i64::MAX),
                        s.weight,
                        s.mirror,
                        pause_ms
                    ],
                )?;
            }
            id
        }
        Some(id) => {
            // A retried rollout is unfinished again, so `finished_ms` goes back to NULL.
            let n = tx.execute(
                "UPDATE rollouts SET state = ?2, step = ?3, weight = ?4, mirror = ?5,
                    kill_switch = ?6, step_started_ms = ?7, step_ends_ms = ?8,
                    paused_remaining_ms = ?9, deadline_ms = ?10, updated_ms = ?11, analysis = ?12,
                    finished_ms = CASE WHEN ?13 IS NULL THEN NULL ELSE COALESCE(finished_ms, ?13) END,
                    holds = ?14
                 WHERE id = ?1",
                params![
                    id,
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
                    analysis,
                    finished,
                    holds
                ],
            )?;
            if n != 1 {
                return Err(StoreError(format!(
                    "rollout {name:?} (id {id}) is not in the store"
                )));
            }
            id
        }
    };
    if let Some((from, reason)) = w.transition {
        tx.execute(
            "INSERT INTO transitions (rollout_id, rollout, at_ms, from_state, to_state, step,
                weight, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
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
    Ok(id)
}

/// A [`Release`] from a row of [`RELEASE_COLUMNS`]; the inner `Err` is a row that does not
/// read back (a spec or state this binary does not know).
fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Release, StoreError>> {
    let id: i64 = r.get(0)?;
    let name: String = r.get(1)?;
    let spec: String = r.get(2)?;
    let state: String = r.get(3)?;
    let analysis: String = r.get(12)?;
    let at = |what: &str, e: &dyn fmt::Display| {
        StoreError(format!("rollout {name:?} (id {id}): {what}: {e}"))
    };
    let spec: RolloutSpec = match serde_json::from_str(&spec) {
        Ok(s) => s,
        Err(e) => return Ok(Err(at("stored spec", &e))),
    };
    let Some(state) = State::parse(&state) else {
        return Ok(Err(at("unknown state", &state)));
    };
    let analysis: Memory = match serde_json::from_str(&analysis) {
        Ok(a) => a,
        Err(e) => return Ok(Err(at("stored analysis", &e))),
    };
    let holds: String = r.get(15)?;
    let holds: Holds = match serde_json::from_str(&holds) {
        Ok(h) => h,
        Err(e) => return Ok(Err(at("stored holds", &e))),
    };
    let runtime = Runtime {
        state,
        step: usize::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        weight: r.get(5)?,
        mirror: r.get(6)?,
        kill_switch: r.get(7)?,
        step_started_ms: r.get(8)?,
        step_ends_ms: r.get(9)?,
        paused_remaining_ms: r.get(10)?,
        deadline_ms: r.get(11)?,
        analysis,
        holds,
    };
    Ok(Ok(Release {
        id,
        spec,
        runtime,
        created_ms: r.get(13)?,
        finished_ms: r.get(14)?,
    }))
}

// === notifications ===

/// The columns a [`Delivery`] is read from, in [`delivery_row`]'s order.
const DELIVERY_COLUMNS: &str = "id, event_id, rollout, rollout_id, receiver, topic, url, body,
    content_type, signature, idempotency_key, state, attempts, max_attempts, backoff_ms,
    timeout_ms, next_ms, last_error, created_ms, delivered_ms";

impl Store {
    /// The id of the last event the outbox has turned into deliveries.
    pub fn notify_cursor(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT after FROM notify_cursor WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0))
    }

    /// Stores `deliveries` and moves the cursor to `after`, in one transaction: an event is
    /// either wholly in the outbox or still ahead of the cursor.
    pub fn enqueue(&mut self, after: i64, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (event_id, rollout, rollout_id, receiver, topic,
                    url, body, content_type, signature, idempotency_key, state, attempts,
                    max_attempts, backoff_ms, timeout_ms, next_ms, last_error, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12, ?13, ?14, ?15, ?16, ?15)",
            )?;
            for d in deliveries {
                insert.execute(params![
                    d.event_id,
                    d.rollout,
                    d.rollout_id,
                    d.receiver,
                    d.topic,
                    d.url,
                    d.body,
                    d.content_type,
                    d.signature,
                    d.idempotency_key,
                    d.state.as_str(),
                    d.max_attempts,
                    d.backoff_ms,
                    d.timeout_ms,
                    d.at_ms,
                    d.error,
                ])?;
            }
        }
        tx.execute(
            "INSERT INTO notify_cursor (id, after) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET after = excluded.after",
            params![after],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The oldest waiting delivery of each receiver, if it is due: a receiver gets its
    /// notifications in order, and one that is down holds back only its own.
    pub fn due_deliveries(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id IN (
                SELECT MIN(id) FROM deliveries WHERE state IN ('pending', 'retrying')
                GROUP BY receiver)
             AND next_ms <= ?1 ORDER BY id LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![now, limit], delivery_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Records one attempt's result.
    pub fn attempted(
        &mut self,
        id: i64,
        state: DeliveryState,
        next_ms: Millis,
        error: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let delivered = (state == DeliveryState::Delivered).then_some(now);
        self.conn.execute(
            "UPDATE deliveries SET state = ?2, attempts = attempts + 1, next_ms = ?3,
                last_error = COALESCE(?4, last_error), delivered_ms = ?5 WHERE id = ?1",
            params![id, state.as_str(), next_ms, error, delivered],
        )?;
        Ok(())
    }

    /// Deliveries, newest first, of one rollout and/or in one state.
    pub fn deliveries(
        &self,
        rollout: Option<&str>,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries
             WHERE (?1 IS NULL OR rollout = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![rollout, state.map(DeliveryState::as_str), limit],
            delivery_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    pub fn delivery(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
        Ok(self
            .conn
            .query_row(&sql, params![id], delivery_row)
            .optional()?)
    }

    /// Puts a failed delivery back in line, with its attempts counted afresh.
    pub fn resend(&mut self, id: i64, now: Millis) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_ms = ?2
             WHERE id = ?1 AND state = 'failed'",
            params![id, now],
        )?;
        Ok(())
    }

    /// Deliveries not yet delivered nor given up.
    pub fn waiting_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'retrying')",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The global receivers, by name.
    pub fn receivers(&self) -> Result<Vec<ReceiverSpec>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, spec FROM receivers ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, spec) = row?;
            let spec: ReceiverSpec = serde_json::from_str(&spec)
                .map_err(|e| StoreError(format!("receiver {name:?}: unreadable spec: {e}")))?;
            out.push(spec);
        }
        Ok(out)
    }

    /// Adds or replaces a global receiver; `true` when it replaced one.
    pub fn put_receiver(&mut self, spec: &ReceiverSpec, now: Millis) -> Result<bool, StoreError> {
        let json = serde_json::to_string(spec)
            .map_err(|e| StoreError(format!("cannot encode receiver {:?}: {e}", spec.name)))?;
        let tx = self.conn.transaction()?;
        let existed = tx
            .query_row(
                "SELECT 1 FROM receivers WHERE name = ?1",
                params![spec.name],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        tx.execute(
            "INSERT INTO receivers (name, spec, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
            params![spec.name, json, now],
        )?;
        tx.commit()?;
        Ok(existed)
    }

    /// Every key, revoked ones included, by name.
    pub fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, scope, hash, rate, burst, created_ms, revoked_ms FROM keys ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(1)?,
                StoredKey {
                    name: r.get(0)?,
                    scope: Scope::Read,
                    hash: r.get(2)?,
                    rate: r.get(3)?,
                    burst: r.get(4)?,
                    created_ms: r.get(5)?,
                    revoked_ms: r.get(6)?,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (scope, mut key) = row?;
            key.scope = Scope::parse(&scope).ok_or_else(|| {
                StoreError(format!("key {:?}: unknown scope {scope:?}", key.name))
            })?;
            out.push(key);
        }
        Ok(out)
    }

    /// Removes a global receiver; `false` when there was none. Its stored deliveries stay.
    pub fn delete_receiver(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM receivers WHERE name = ?1", params![name])?
            > 0)
    }
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let state: String = r.get(11)?;
    Ok(Delivery {
        id: r.get(0)?,
        event_id: r.get(1)?,
        rollout: r.get(2)?,
        rollout_id: r.get(3)?,
        receiver: r.get(4)?,
        topic: r.get(5)?,
        url: r.get(6)?,
        body: r.get(7)?,
        content_type: r.get(8)?,
        signature: r.get(9)?,
        idempotency_key: r.get(10)?,
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Failed),
        attempts: r.get(12)?,
        max_attempts: r.get(13)?,
        backoff_ms: r.get(14)?,
        timeout_ms: r.get(15)?,
        next_ms: r.get(16)?,
        last_error: r.get(17)?,
        created_ms: r.get(18)?,
        delivered_ms: r.get(19)?,
    })
}

/// Every stored row reads: one this version does not understand is kept as it is.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let data: String = r.get(5)?;
    Ok(Event::from_row(
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        &data,
        r.get(6)?,
    ))
}

fn rows(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
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
    use crate::analysis::Action;
    use crate::analysis::Check;
    use crate::event::{AnalysisRun, Created, KillSwitch};
    use crate::spec::Format;

    fn created() -> Payload {
        Payload::Created(Created {
            state: State::Pending,
            steps: 1,
            reason: "created by operator".into(),
        })
    }

    fn spec(name: &str) -> (RolloutSpec, Plan) {
        let yaml = format!("name: {name}\nsteps: [{{weight: 5, pause: 1m}}]");
        RolloutSpec::parse(yaml.as_bytes(), Format::Yaml).unwrap()
    }

    fn write(
        s: &mut Store,
        id: Option<i64>,
        spec: &RolloutSpec,
        plan: &Plan,
        rt: &Runtime,
    ) -> Event {
        s.commit(Change {
            actor: "admin",
            key: None,
            at_ms: 10,
            rollout: Some(RolloutWrite {
                id,
                spec,
                plan,
                runtime: rt,
                transition: Some((State::Pending, "created")),
            }),
            kill_switch: Some(true),
            bump_version: true,
            payload: created(),
        })
        .unwrap()
        .0
    }

    #[test]
    fn migrates_writes_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (spec, plan) = spec("a");
        let rt = Runtime::new(&plan, 10);
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let ev = write(&mut s, None, &spec, &plan, &rt);
            assert_eq!((ev.id, ev.rollout_id), (1, Some(1)));
            assert_eq!(ev.version, Some(1));
        }
        // Reopening applies no migration twice and finds everything.
        let s = Store::open(&path).unwrap();
        let loaded = s.load().unwrap();
        assert_eq!((loaded.version, loaded.kill_switch), (1, true));
        assert_eq!(loaded.rollouts.len(), 1);
        let r = &loaded.rollouts[0];
        assert_eq!(
            (r.id, &r.spec, &r.runtime, r.finished_ms),
            (1, &spec, &rt, None)
        );
        assert_eq!(s.events(0, Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.events(1, None, 10).unwrap().len(), 0);
        assert_eq!(s.latest_events(1, 10).unwrap().len(), 1);
        assert_eq!(s.transitions(1, 5).unwrap().len(), 1);
        assert_eq!(s.event_count().unwrap(), 1);
    }

    #[test]
    fn a_name_has_one_unfinished_release_and_any_number_of_finished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("t.db")).unwrap();
        let (spec, plan) = spec("a");
        let rt = Runtime::new(&plan, 10);
        write(&mut s, None, &spec, &plan, &rt);
        // A second unfinished `a` is refused by the store itself, and nothing is written.
        let e = s
            .commit(Change {
                actor: "admin",
                key: None,
                at_ms: 11,
                rollout: Some(RolloutWrite {
                    id: None,
                    spec: &spec,
                    plan: &plan,
                    runtime: &rt,
                    transition: None,
                }),
                kill_switch: None,
                bump_version: true,
                payload: created(),
            })
            .err()
            .unwrap();
        assert!(e.0.contains("unfinished rollout named \"a\""), "{e}");
        assert_eq!(s.event_count().unwrap(), 1);
        let done = Runtime {
            state: State::Aborted,
            ..rt.clone()
        };
        write(&mut s, Some(1), &spec, &plan, &done);
        let ev = write(&mut s, None, &spec, &plan, &rt);
        assert_eq!(ev.rollout_id, Some(2));
        let loaded = s.load().unwrap();
        assert_eq!(
            loaded.rollouts.iter().map(|r| r.id).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(s.latest_release("a").unwrap().unwrap().id, 2);
        let old = s.release(1).unwrap().unwrap();
        assert_eq!(
            (old.runtime.state, old.finished_ms),
            (State::Aborted, Some(10))
        );
        assert_eq!(
            s.history(None, 10)
                .unwrap()
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            [2, 1]
        );
        // Each release keeps its own events and transitions.
        assert_eq!(s.latest_events(1, 10).unwrap().len(), 2);
        assert_eq!(s.latest_events(2, 10).unwrap().len(), 1);
        assert_eq!(s.transitions(2, 10).unwrap().len(), 1);
    }

    /// A change of release `id` (`None`: a new one) at `at_ms`, with a transition and one check.
    fn change_at(
        s: &mut Store,
        at_ms: Millis,
        id: Option<i64>,
        (spec, plan): &(RolloutSpec, Plan),
        state: State,
    ) -> Event {
        let rt = Runtime {
            state,
            ..Runtime::new(plan, at_ms)
        };
        let check = Check {
            guardrail: "errors".into(),
            kind: "error_rate".into(),
            severity: crate::analysis::policy::Severity::Critical,
            verdict: crate::analysis::Verdict::Pass,
            observed: Some(0.0),
            limit: Some(1.0),
            text: "fine".into(),
        };
        s.commit(Change {
            actor: "admin",
            key: None,
            at_ms,
            rollout: Some(RolloutWrite {
                id,
                spec,
                plan,
                runtime: &rt,
                transition: Some((State::Pending, "moved")),
            }),
            kill_switch: None,
            bump_version: false,
            payload: Payload::Analysis(AnalysisRun {
                step: 0,
                weight: 5.0,
                subject: "canary".into(),
                decision: Action::Pass,
                reason: "fine".into(),
                checks: vec![check],
                observed: serde_json::Value::Null,
            }),
        })
        .unwrap()
        .0
    }

    fn count(s: &Store, sql: &str) -> i64 {
        s.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn prunes_archived_audit_by_age_and_count_and_never_reuses_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("t.db")).unwrap();
        let (a, live, b) = (spec("a"), spec("live"), spec("b"));
        // `live` from t=0 and never finished; `a` finished at t=30, `b` at t=70.
        change_at(&mut s, 0, None, &live, State::Progressing);
        change_at(&mut s, 10, None, &a, State::Progressing);
        change_at(&mut s, 20, Some(2), &a, State::Progressing);
        change_at(&mut s, 30, Some(2), &a, State::Aborted);
        change_at(&mut s, 40, Some(1), &live, State::Progressing);
        change_at(&mut s, 50, None, &b, State::Progressing);
        change_at(&mut s, 60, Some(3), &b, State::Progressing);
        let last = change_at(&mut s, 70, Some(3), &b, State::Aborted);
        let global = |s: &mut Store, at_ms| {
            s.commit(Change {
                actor: "admin",
                key: None,
                at_ms,
                rollout: None,
                kill_switch: Some(true),
                bump_version: true,
                payload: Payload::KillSwitch(KillSwitch {
                    on: true,
                    reason: "global kill switch on by operator".into(),
                }),
            })
            .unwrap()
            .0
        };
        let g = global(&mut s, 5);
        assert_eq!((s.event_count().unwrap(), g.id), (9, 9));

        // By age, cut at 31: `a`'s audit (3 events, 3 checks, 2 of its 3 transitions: the
        // last stays for the history) and the global event written at 5.
        let pruned = s.prune(31, 1000).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                events: 4,
                checks: 3,
                transitions: 2,
                deliveries: 0
            }
        );
        assert!(s.latest_events(2, 10).unwrap().is_empty());
        assert_eq!(s.transitions(2, 10).unwrap().len(), 1);
        assert_eq!(s.latest_events(3, 10).unwrap().len(), 3);
        // Nothing is due again.
        assert_eq!(s.prune(31, 1000).unwrap(), Pruned::default());

        // By count, down to 2: only `b` can go, oldest first; `live` keeps all of its audit
        // although the cut at t=1000 is past all of it.
        let pruned = s.prune(1000, 2).unwrap();
        assert_eq!(
            (pruned.events, pruned.checks, pruned.transitions),
            (3, 3, 2)
        );
        assert_eq!(s.latest_events(1, 10).unwrap().len(), 2);
        assert_eq!(s.transitions(1, 10).unwrap().len(), 2);
        assert_eq!(s.transitions(3, 10).unwrap().len(), 1);
        assert_eq!(
            count(&s, "SELECT COUNT(*) FROM checks WHERE rollout_id = 1"),
            2
        );
        assert_eq!(count(&s, "SELECT COUNT(*) FROM checks"), 2);
        // Every release is still there.
        assert_eq!(s.history(None, 10).unwrap().len(), 3);
        assert_eq!(s.history(Some("a"), 10).unwrap().len(), 1);
        assert_eq!(s.history(None, 2).unwrap().len(), 2);

        // The highest ids are pruned (b's last event, the global one); the next is above them.
        assert!(s
            .events(0, None, 100)
            .unwrap()
            .iter()
            .all(|e| e.id < last.id));
        assert!(global(&mut s, 80).id > g.id);
        let fk: i64 = count(&s, "SELECT COUNT(*) FROM pragma_foreign_key_check");
        assert_eq!(fk, 0);
    }

    #[test]
    fn a_database_from_before_releases_keeps_its_rollouts_and_their_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let (spec, _) = spec("a");
        {
            // Schema 2 as it shipped, with a promoted `a` and an aborted `b`.
            let mut conn = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..2].iter().enumerate() {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.pragma_update(None, "user_version", i + 1).unwrap();
                tx.commit().unwrap();
            }
            let json = serde_json::to_string(&spec).unwrap();
            let bjson = json.replace("\"a\"", "\"b\"");
            conn.execute_batch(&format!(
                "INSERT INTO rollouts (name, spec, state, step, weight, kill_switch, step_started_ms,
                    created_ms, updated_ms) VALUES
                    ('a', '{json}', 'promoted', 0, 100, 0, 5, 1, 7),
                    ('b', '{bjson}', 'aborted', 0, 0, 0, 5, 2, 8);
                 INSERT INTO steps VALUES ('a', 0, 5, NULL, 60000), ('b', 0, 5, NULL, 60000);
                 INSERT INTO transitions (rollout, at_ms, from_state, to_state, step, weight, reason)
                    VALUES ('a', 7, 'progressing', 'promoted', 0, 100, 'done');
                 INSERT INTO events (at_ms, rollout, kind, data) VALUES (7, 'a', 'promoted', '{{}}');
                 INSERT INTO checks VALUES (1, 'a', 7, 'g', 'error_rate', 'critical', 'pass', 0, 5, 't');"
            ))
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let loaded = s.load().unwrap();
        // The promoted one is unfinished (it waits to be completed); the aborted one archived.
        assert_eq!(loaded.rollouts.len(), 1);
        assert_eq!(
            (loaded.rollouts[0].id, loaded.rollouts[0].runtime.state),
            (1, State::Promoted)
        );
        assert_eq!(s.release(2).unwrap().unwrap().finished_ms, Some(8));
        assert_eq!(s.transitions(1, 10).unwrap()[0].reason, "done");
        assert_eq!(s.latest_events(1, 10).unwrap()[0].rollout_id, Some(1));
        assert_eq!(s.check_count("a", "pass").unwrap(), 1);
        let fk: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0);
    }
}
