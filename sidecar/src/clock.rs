//! The one clock every pause, deadline and timestamp is read from, injectable for tests.
//!
//! Times are milliseconds since the Unix epoch so they can be stored as absolute timestamps:
//! after a restart, a step resumes with exactly the pause it had left.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

pub type SharedClock = Arc<dyn Clock>;

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

/// The wall clock, for production.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Wall time that advances with tokio's clock, so `#[tokio::test(start_paused = true)]` moves
/// it in milliseconds without sleeping.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch_ms: Millis,
    start: tokio::time::Instant,
}

// === impl SystemClock ===

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(millis)
            .unwrap_or(0)
    }
}

// === impl TokioClock ===

impl TokioClock {
    /// Reads `epoch_ms` now and advances with tokio's (possibly paused) time.
    pub fn starting_at(epoch_ms: Millis) -> Self {
        Self {
            epoch_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> Millis {
        self.epoch_ms.saturating_add(millis(self.start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::starting_at(1_000);
        assert_eq!(c.now_ms(), 1_000);
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(c.now_ms(), 3_500);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
