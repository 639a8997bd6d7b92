//! The root context: compiles the plugin configuration once in `on_configure`, and, when a
//! sidecar is configured, keeps the live snapshot current (see `sync`).

use crate::abi::{self, Buffer, Map, MetricKind};
use crate::host::serialize_map;
use crate::metrics::{define_one, Metrics};
use crate::sync::{Publish, SharedKeys};
use linnet_core::config::{OnStale, SidecarConfig};
use linnet_core::murmur3::murmur3_x86_32;
use linnet_core::{Epoch, PluginConfig, Snapshot, SnapshotDoc, Stamp};
use std::cell::Cell;
use std::rc::Rc;

/// How often every VM looks for a new snapshot in shared data.
const SYNC_PERIOD_MS: u32 = 50;
/// How often a root without a sidecar ticks: to hand its counts to Envoy (`Metrics::flush`)
/// and to show it is alive (see `exports`, which
/// forgets the least recently active root when a VM has too many).
const ALIVE_PERIOD_MS: u32 = 200;
/// Wait after a failed or rejected poll before the next one.
const RETRY_NS: u64 = 1_000_000_000;
/// Extra time the HTTP call gets over the sidecar's hold time.
const POLL_GRACE_MS: u64 = 5_000;

/// What every request routes by: a compiled configuration and the metric ids that go with it.
pub struct Routing {
    /// Which snapshot this is; the plugin configuration's own is version 0 of no epoch.
    pub stamp: Stamp,
    pub snapshot: Snapshot,
    pub metrics: Metrics,
    /// The snapshot is stale and `on_stale: stable` asks for all traffic on stable.
    pub stale: Cell<bool>,
}

#[derive(Default)]
pub struct Root {
    base: PluginConfig,
    routing: Option<Rc<Routing>>,
    poller: Option<Poller>,
}

/// The state of the config path for this VM.
struct Poller {
    config: SidecarConfig,
    keys: SharedKeys,
    /// This VM's lease identity.
    me: u64,
    started_ns: u64,
    in_flight: bool,
    next_poll_ns: u64,
    version_gauge: u32,
    age_gauge: u32,
    errors: u32,
    rejected: u32,
}

// === impl Routing ===

impl Routing {
    fn compile(config: &PluginConfig, stamp: Stamp) -> Result<Routing, String> {
        let snapshot = config.compile(stamp.version).map_err(|e| e.to_string())?;
        let metrics = Metrics::define(&snapshot)?;
        Ok(Routing {
            stamp,
            snapshot,
            metrics,
            stale: Cell::new(false),
        })
    }
}

// === impl Root ===

impl Root {
    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        // An absent configuration means no rollouts: the filter passes traffic through.
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            bytes
        };
        let base = PluginConfig::from_json(bytes).map_err(|e| e.to_string())?;
        let mut routing = Routing::compile(&base, Stamp::default())?;
        let now = crate::host::now_ns();
        let tick = |period: u32| {
            abi::set_tick_period_ms(period)
                .map_err(|s| format!("cannot set the tick period: host status {s}"))
        };
        self.poller = match &base.sidecar {
            None => {
                tick(ALIVE_PERIOD_MS)?;
                None
            }
            Some(sc) => {
                let poller = Poller::new(sc.clone(), now)?;
                // A reloaded VM starts from the snapshot its process already has.
                if let Some(restored) = poller
                    .keys
                    .stored_snapshot()
                    .and_then(|(_, body)| Self::load(&base, &body).ok())
                {
                    routing = restored;
                }
                tick(SYNC_PERIOD_MS)?;
                Some(poller)
            }
        };
        abi::log(
            abi::INFO,
            &format!(
                "linnet: configured {} rollout(s), snapshot {}",
                routing.snapshot.rollouts.len(),
                routing.stamp
            ),
        );
        self.base = base;
        self.replace(routing);
        Ok(())
    }

    /// Routes by `routing` from now on; what the one before counted goes to Envoy first.
    fn replace(&mut self, routing: Routing) {
        self.flush();
        self.routing = Some(Rc::new(routing));
    }

    fn flush(&self) {
        if let Some(r) = &self.routing {
            r.metrics.flush();
        }
    }

    /// Compiles a snapshot body from the sidecar on top of the plugin configuration.
    fn load(base: &PluginConfig, body: &[u8]) -> Result<Routing, String> {
        let doc = SnapshotDoc::from_json(body).map_err(|e| e.to_string())?;
        Routing::compile(&base.with_snapshot(&doc), doc.stamp())
    }

    fn stamp(&self) -> Option<&Stamp> {
        self.routing.as_ref().map(|a| &a.stamp)
    }

    /// Swaps in the stored snapshot whenever it is not this VM's: shared data holds the one
    /// the process routes by, and `publish` alone decides which one that is.
    fn sync_from_shared(&mut self) {
        let Some(p) = &self.poller else { return };
        let Some(stored) = p.keys.stored_stamp() else {
            return;
        };
        if Some(&stored) == self.stamp() {
            return;
        }
        let Some((stamp, body)) = p.keys.stored_snapshot() else {
            return;
        };
        if Some(&stamp) == self.stamp() {
            // The version key is being rewritten by the publisher; nothing to swap.
            return;
        }
        match Self::load(&self.base, &body) {
            Ok(routing) => self.replace(routing),
            // The storing VM validated it with the same base: only a reconfigured base can
            // disagree, and then the last good snapshot stays.
            Err(e) => abi::log(
                abi::WARN,
                &format!("linnet: stored snapshot does not apply here: {e}"),
            ),
        }
    }

    fn update_staleness(&self, now: u64) {
        let (Some(p), Some(routing)) = (&self.poller, &self.routing) else {
            return;
        };
        let since = p.keys.last_contact().unwrap_or(p.started_ns);
        let age_s = now.saturating_sub(since) / 1_000_000_000;
        let _ = abi::record_metric(p.age_gauge, age_s);
        let _ = abi::record_metric(p.version_gauge, routing.snapshot.version);
        let stale = p.config.on_stale == OnStale::Stable && age_s >= p.config.stale_after_s;
        if routing.stale.replace(stale) != stale {
            abi::log(
                abi::WARN,
                &format!("linnet: snapshot stale={stale} (last contact {age_s}s ago)"),
            );
        }
    }

    fn poll(&mut self, now: u64) {
        // `routing`, not `stamp()`: a borrow of the field alone leaves `poller` free.
        let (version, epoch) = self.routing.as_ref().map_or((0, ""), |a| {
            (
                a.stamp.version,
                a.stamp.epoch.as_ref().map_or("", Epoch::as_str),
            )
        });
        let Some(p) = &mut self.poller else { return };
        if !p.keys.hold_lease(p.me, now) || p.in_flight || now < p.next_poll_ns {
            return;
        }
        // The epoch, empty when this VM has none, asks a sidecar that has one to answer at
        // once when it is not its own; an epoch needs no escaping (see `Epoch`).
        let path = format!(
            "{}?version={version}&epoch={epoch}&timeout_ms={}",
            p.config.path, p.config.poll_timeout_ms
        );
        let poller_id = format!("{:016x}", p.me);
        let bearer = p.config.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", p.config.authority.as_str()),
            (linnet_core::poll::POLLER_HEADER, poller_id.as_str()),
        ];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let timeout_ms = p.config.poll_timeout_ms.saturating_add(POLL_GRACE_MS);
        let timeout_ms = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
        // Its answer comes to this root (the context that sent it), one call at a time.
        match abi::http_call(&p.config.cluster, &serialize_map(&headers), timeout_ms) {
            Ok(_) => p.in_flight = true,
            Err(status) => {
                let message = format!(
                    "linnet: cannot poll cluster {:?}: host status {status}",
                    p.config.cluster
                );
                p.back_off(p.errors, now, abi::WARN, &message);
            }
        }
    }

    fn on_poll_response(&mut self, now: u64) {
        // Swapped in once the poller is done with: the old one's counts go to Envoy first.
        let mut replaced = None;
        let Some(p) = &mut self.poller else { return };
        p.in_flight = false;
        let status = abi::header(Map::HttpCallResponse, ":status").ok().flatten();
        match status.as_deref() {
            Some(b"200") => {
                let body = abi::buffer(Buffer::HttpCallResponseBody)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match Self::load(&self.base, &body) {
                    Ok(routing) => {
                        p.keys.touch_contact(now);
                        match p.keys.publish(&routing.stamp, &body) {
                            Publish::Stored => {
                                if self.routing.as_ref().map(|a| &a.stamp) != Some(&routing.stamp) {
                                    abi::log(
                                        abi::INFO,
                                        &format!("linnet: snapshot {}", routing.stamp),
                                    );
                                }
                                replaced = Some(routing);
                            }
                            // A reply overtaken by a newer one of its epoch: the tick takes
                            // what shared data keeps. A sidecar that keeps serving it (one from
                            // before epochs, its database replaced) is asked again after the
                            // back-off, not at once.
                            Publish::Kept(held) => {
                                p.next_poll_ns = now.saturating_add(RETRY_NS);
                                abi::log(
                                    abi::INFO,
                                    &format!(
                                        "linnet: answer {} not taken: shared data keeps {held}",
                                        routing.stamp
                                    ),
                                );
                            }
                            Publish::Failed => p.back_off(
                                p.errors,
                                now,
                                abi::WARN,
                                &format!(
                                    "linnet: cannot store snapshot {} in shared data; keeping the last good one",
                                    routing.stamp
                                ),
                            ),
                        }
                    }
                    Err(e) => p.back_off(
                        p.rejected,
                        now,
                        abi::ERROR,
                        &format!("linnet: rejected snapshot, keeping the last good one: {e}"),
                    ),
                }
            }
            Some(b"304") => p.keys.touch_contact(now),
            other => {
                let status = other.map(String::from_utf8_lossy);
                p.back_off(
                    p.errors,
                    now,
                    abi::WARN,
                    &format!("linnet: snapshot poll failed (status {status:?}); keeping the last good one"),
                );
            }
        }
        if let Some(routing) = replaced {
            self.replace(routing);
        }
    }

    /// The sidecar answered the poll (`proxy_on_http_call_response`).
    pub fn on_http_call_response(&mut self) {
        let now = crate::host::now_ns();
        self.on_poll_response(now);
        // An answer shared data did not take leaves this VM behind it: catch up before
        // asking again, so the poll says what the process routes by.
        self.sync_from_shared();
        self.update_staleness(now);
        // Ask again at once: the sidecar holds the call until something changes.
        self.poll(now);
    }

    /// `proxy_on_configure`: false refuses the configuration, with a log line naming why.
    pub fn on_configure(&mut self) -> bool {
        let bytes = match abi::buffer(Buffer::PluginConfiguration) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                abi::log(
                    abi::ERROR,
                    &format!("linnet: cannot read the plugin configuration: host status {status}"),
                );
                return false;
            }
        };
        match self.configure(&bytes) {
            Ok(()) => true,
            Err(e) => {
                abi::log(
                    abi::ERROR,
                    &format!("linnet: invalid plugin configuration: {e}"),
                );
                false
            }
        }
    }

    pub fn on_tick(&mut self) {
        let now = crate::host::now_ns();
        self.flush();
        self.sync_from_shared();
        self.update_staleness(now);
        self.poll(now);
    }

    /// What a stream under this root routes by now; `None` (traffic passes through) before a
    /// configuration was accepted.
    pub fn routing(&self) -> Option<&Routing> {
        self.routing.as_deref()
    }
}

// === impl Poller ===

impl Poller {
    fn new(config: SidecarConfig, now: u64) -> Result<Poller, String> {
        // VMs of one process start at different nanoseconds; the hash spreads the bits.
        let t = now.to_le_bytes();
        let me = (u64::from(murmur3_x86_32(&[&t], 1)) << 32) | u64::from(murmur3_x86_32(&[&t], 2));
        Ok(Poller {
            keys: SharedKeys::new(&config.cluster, &config.path),
            me,
            started_ns: now,
            in_flight: false,
            next_poll_ns: 0,
            version_gauge: define_one(MetricKind::Gauge, linnet_core::metrics::SNAPSHOT_VERSION)?,
            age_gauge: define_one(MetricKind::Gauge, linnet_core::metrics::SNAPSHOT_AGE)?,
            errors: define_one(MetricKind::Counter, linnet_core::metrics::SNAPSHOT_ERRORS)?,
            rejected: define_one(MetricKind::Counter, linnet_core::metrics::SNAPSHOT_REJECTED)?,
            config,
        })
    }

    /// A poll that went wrong: counted on `counter`, logged, and the next one after the
    /// back-off.
    fn back_off(&mut self, counter: u32, now: u64, level: u32, message: &str) {
        let _ = abi::increment_metric(counter, 1);
        self.next_poll_ns = now.saturating_add(RETRY_NS);
        abi::log(level, message);
    }
}
