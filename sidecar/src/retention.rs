//! The retention policy: how long and how much audit the store keeps, and the task that
//! prunes by it on a timer, counting and logging what it deleted.
//!
//! Only archived rollouts' audit and global events are pruned; every rollout row stays (the
//! archive of releases), and so does everything of an unfinished rollout.

use crate::clock::millis;
use crate::controller::{Controller, CtlError};
use crate::store::Pruned;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const DEFAULT_DAYS: u64 = 30;
pub const DEFAULT_MAX_EVENTS: u64 = 100_000;
/// How often the store is pruned: the count can overshoot by what is written meanwhile.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// An archived rollout's audit is kept this long after it finished; a global event this
    /// long after it was written.
    pub max_age: Duration,
    /// At most this many events (and as many transitions) are kept, oldest pruned first.
    pub max_events: u64,
    pub interval: Duration,
}

// === impl Retention ===

impl Retention {
    pub fn days(days: u64, max_events: u64) -> Retention {
        Retention {
            max_age: DAY.saturating_mul(u32::try_from(days).unwrap_or(u32::MAX)),
            max_events,
            interval: DEFAULT_INTERVAL,
        }
    }

    /// Prunes once, now by the controller's clock; counts and logs what went.
    pub async fn prune(&self, ctl: &Controller) -> Result<Pruned, CtlError> {
        let before_ms = ctl.now_ms().saturating_sub(millis(self.max_age));
        let pruned = ctl.prune(before_ms, self.max_events).await?;
        let m = ctl.metrics();
        m.count_pruned("events", pruned.events);
        m.count_pruned("checks", pruned.checks);
        m.count_pruned("transitions", pruned.transitions);
        m.count_pruned("deliveries", pruned.deliveries);
        if pruned != Pruned::default() {
            tracing::info!(
                events = pruned.events,
                checks = pruned.checks,
                transitions = pruned.transitions,
                deliveries = pruned.deliveries,
                "pruned audit past retention"
            );
        }
        Ok(pruned)
    }

    /// Prunes at once and then every `interval` until `shutdown` turns true.
    pub fn spawn(self, ctl: Controller, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = crate::signal::stopped(&mut shutdown) => break,
                }
                if let Err(e) = self.prune(&ctl).await {
                    tracing::error!(error = %e, "pruning the store failed; trying again later");
                }
            }
        })
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::days(DEFAULT_DAYS, DEFAULT_MAX_EVENTS)
    }
}
