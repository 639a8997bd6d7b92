//! Capped places for requests that stay open (event streams, held snapshot polls): a place is
//! taken before the request starts waiting and given back when its [`Slot`] drops, however the
//! request ends (answered, timed out, shut down, or the client gone mid-stream).

use prometheus_client::metrics::gauge::Gauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// At most `cap` places, counted in `in_use` (a gauge the metrics endpoint shows).
#[derive(Debug)]
pub struct Slots {
    cap: usize,
    held: AtomicUsize,
    in_use: Gauge,
}

/// One taken place; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
}

// === impl Slots ===

impl Slots {
    pub fn new(cap: usize, in_use: Gauge) -> Arc<Slots> {
        Arc::new(Slots {
            cap,
            held: AtomicUsize::new(0),
            in_use,
        })
    }

    /// A place, or `None` when all `cap` are taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()?;
        self.in_use.inc();
        Some(Slot {
            slots: Arc::clone(self),
        })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.held.fetch_sub(1, Ordering::AcqRel);
        self.slots.in_use.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_slot_is_taken_again() {
        let gauge = Gauge::default();
        let slots = Slots::new(2, gauge.clone());
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        assert_eq!((slots.held(), gauge.get()), (2, 2));
        drop(a);
        assert_eq!((slots.held(), gauge.get()), (1, 1));
        let c = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop((b, c));
        assert_eq!((slots.held(), gauge.get()), (0, 0));
    }
}
