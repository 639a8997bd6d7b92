//! The config path inside one Envoy process. One VM holds a lease in shared data and
//! long-polls the sidecar; it stores each new snapshot in shared data, where every worker VM
//! finds it on its tick. Shared data outlives a VM reload, so a reloaded VM starts from the
//! last good snapshot. All writes are compare-and-swap, retried on a mismatch.

use crate::abi::{self, SetError};

/// A lease not renewed for this long is free for another VM to take.
pub const LEASE_TTL_NS: u64 = 3_000_000_000;
const CAS_RETRIES: usize = 8;

/// Shared-data keys of one plugin instance (one sidecar endpoint).
pub struct Keys {
    lease: String,
    snapshot: String,
    version: String,
    contact: String,
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

// === impl Keys ===

impl Keys {
    pub fn new(cluster: &str, path: &str) -> Keys {
        let prefix = format!("linnet/{cluster}{path}/");
        Keys {
            lease: format!("{prefix}lease"),
            snapshot: format!("{prefix}snapshot"),
            version: format!("{prefix}version"),
            contact: format!("{prefix}contact"),
        }
    }

    /// Takes the lease if it is free or expired, or renews it if `me` holds it. True if `me`
    /// holds it afterwards.
    pub fn hold_lease(&self, me: u64, now_ns: u64) -> bool {
        for _ in 0..CAS_RETRIES {
            let Ok((current, cas)) = abi::shared_get(&self.lease) else {
                return false;
            };
            if let Some(cur) = current {
                let (holder, expires) = (u64_at(&cur, 0), u64_at(&cur, 8));
                if holder != Some(me) && expires.is_some_and(|e| e > now_ns) {
                    return false;
                }
            }
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&me.to_le_bytes());
            value[8..].copy_from_slice(&now_ns.saturating_add(LEASE_TTL_NS).to_le_bytes());
            match abi::shared_set(&self.lease, &value, cas) {
                Ok(()) => return true,
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(_)) => return false,
            }
        }
        false
    }

    /// The version of the stored snapshot, 0 if there is none. Cheap: 8 bytes.
    pub fn stored_version(&self) -> u64 {
        abi::shared_get(&self.version)
            .ok()
            .and_then(|(v, _)| v)
            .and_then(|v| u64_at(&v, 0))
            .unwrap_or(0)
    }

    /// The stored snapshot body and its version.
    pub fn stored_snapshot(&self) -> Option<(u64, Vec<u8>)> {
        let (value, _) = abi::shared_get(&self.snapshot).ok()?;
        let mut value = value?;
        let version = u64_at(&value, 0)?;
        value.drain(..8);
        Some((version, value))
    }

    /// Stores a snapshot unless a newer one is already there, then publishes its version.
    pub fn publish(&self, version: u64, body: &[u8]) -> bool {
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(body);
        let stored = self.cas_newer(&self.snapshot, version, &value);
        stored && self.cas_newer(&self.version, version, &version.to_le_bytes())
    }

    /// Writes `value` (which starts with `version`) unless the key holds a version at least
    /// as new. True if the key now holds `version` or newer.
    fn cas_newer(&self, key: &str, version: u64, value: &[u8]) -> bool {
        for _ in 0..CAS_RETRIES {
            let Ok((current, cas)) = abi::shared_get(key) else {
                return false;
            };
            if current
                .as_deref()
                .and_then(|c| u64_at(c, 0))
                .is_some_and(|v| v >= version)
            {
                return true;
            }
            match abi::shared_set(key, value, cas) {
                Ok(()) => return true,
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(_)) => return false,
            }
        }
        false
    }

    /// Records a successful exchange with the sidecar (a new snapshot or "no change").
    pub fn touch_contact(&self, now_ns: u64) {
        let _ = abi::shared_set(&self.contact, &now_ns.to_le_bytes(), 0);
    }

    /// When this process last heard from the sidecar.
    pub fn last_contact(&self) -> Option<u64> {
        abi::shared_get(&self.contact)
            .ok()?
            .0
            .and_then(|v| u64_at(&v, 0))
    }
}
