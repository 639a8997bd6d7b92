//! Proxy-wasm shared data: one key-value store that several VMs (Envoy workers) see, with
//! Envoy's compare-and-swap rules.

use crate::Status;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A handle on one shared-data store; clones share it. Give the same handle to several
/// [`crate::Vm`]s to model the workers of one Envoy process.
#[derive(Clone, Debug, Default)]
pub struct SharedData(Arc<Mutex<Store>>);

#[derive(Debug, Default)]
struct Store {
    entries: HashMap<Vec<u8>, (Vec<u8>, u32)>,
    /// Like Envoy, one counter for every key, so a cas is never reused for another write.
    last_cas: u32,
}

// === impl SharedData ===

impl SharedData {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value and its cas, or `None` for a key never written.
    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.lock().entries.get(key).cloned()
    }

    /// Writes `value` if `cas` is 0 or matches the current cas of the key (a key never written
    /// accepts any cas, as in Envoy). Returns the new cas; a stale cas is
    /// [`Status::CasMismatch`].
    pub fn set(&self, key: &[u8], value: &[u8], cas: u32) -> Result<u32, Status> {
        let mut store = self.lock();
        if let Some((_, current)) = store.entries.get(key) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        store.last_cas = store.last_cas.checked_add(1).unwrap_or(1);
        let next = store.last_cas;
        store.entries.insert(key.to_vec(), (value.to_vec(), next));
        Ok(next)
    }

    /// Every key currently stored, sorted.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<_> = self.lock().entries.keys().cloned().collect();
        keys.sort();
        keys
    }
}
