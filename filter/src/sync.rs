//! The config path inside one Envoy process. One VM holds a lease in shared data and
//! long-polls the sidecar; it stores each new snapshot in shared data, where every worker VM
//! finds it on its tick. Shared data outlives a VM reload, so a reloaded VM starts from the
//! last good snapshot. All writes are compare-and-swap, retried on a mismatch. A snapshot is
//! known by its stamp, (epoch, version): see `linnet_core::stamp` for which one is kept.

use crate::abi::{self, SetError};
use linnet_core::{Epoch, Stamp, Standing};

/// A lease not renewed for this long is free for another VM to take.
pub const LEASE_TTL_NS: u64 = 3_000_000_000;
const CAS_RETRIES: usize = 8;

/// Shared-data keys of one plugin instance (one sidecar endpoint).
pub struct SharedKeys {
    lease: String,
    snapshot: String,
    version: String,
    contact: String,
}

/// What became of a snapshot offered to shared data.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish {
    /// Shared data holds it: every worker takes it on its next tick.
    Stored,
    /// Shared data keeps another snapshot: a newer version of the same epoch (the offered one
    /// is a reply overtaken by a newer one), or one another VM stored meanwhile.
    Kept(Stamp),
    /// The host refused a read or a write, or other VMs kept writing: try again later.
    Failed,
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The version key's value: the version (u64, little-endian), then the epoch's bytes, if
/// any. A VM from before epochs reads the version and ignores the rest.
fn encode_stamp(stamp: &Stamp) -> Vec<u8> {
    let epoch = stamp.epoch.as_ref().map_or("", Epoch::as_str);
    let mut value = Vec::with_capacity(8 + epoch.len());
    value.extend_from_slice(&stamp.version.to_le_bytes());
    value.extend_from_slice(epoch.as_bytes());
    value
}

fn decode_stamp(value: &[u8]) -> Option<Stamp> {
    let version = u64_at(value, 0)?;
    let epoch = match value.get(8..) {
        None | Some([]) => None,
        Some(e) => Some(Epoch::try_from(e).ok()?),
    };
    Some(Stamp { epoch, version })
}

/// The stamp of a snapshot key's value: the version, then the body, which names its epoch.
fn snapshot_stamp(value: &[u8]) -> Option<Stamp> {
    let stamp = Stamp::of_doc(value.get(8..)?).ok()?;
    (u64_at(value, 0)? == stamp.version).then_some(stamp)
}

// === impl SharedKeys ===

impl SharedKeys {
    pub fn new(cluster: &str, path: &str) -> SharedKeys {
        let prefix = format!("linnet/{cluster}{path}/");
        SharedKeys {
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

    /// The stamp of the stored snapshot, if there is one. Cheap: a few bytes, read on every
    /// tick by every VM.
    pub fn stored_stamp(&self) -> Option<Stamp> {
        let (value, _) = abi::shared_get(&self.version).ok()?;
        decode_stamp(&value?)
    }

    /// The stored snapshot body and its stamp (read from the body, which names its epoch).
    pub fn stored_snapshot(&self) -> Option<(Stamp, Vec<u8>)> {
        let (value, _) = abi::shared_get(&self.snapshot).ok()?;
        let mut value = value?;
        let stamp = snapshot_stamp(&value)?;
        value.drain(..8);
        Some((stamp, value))
    }

    /// Offers a snapshot to shared data. It replaces the stored one unless that is the same
    /// or a newer version of the same epoch (see [`Stamp::against`]); then the version key,
    /// which workers read on every tick, is made to name what the snapshot key holds.
    pub fn publish(&self, stamp: &Stamp, body: &[u8]) -> Publish {
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&stamp.version.to_le_bytes());
        value.extend_from_slice(body);
        if let Err(outcome) = self.offer(stamp, &value) {
            return outcome;
        }
        // Two keys cannot change at once. Writing the version key, then checking that the
        // snapshot key did not change meanwhile, leaves the last writer's version key naming
        // the last snapshot, however publishers interleave.
        for _ in 0..CAS_RETRIES {
            let Ok((Some(current), cas)) = abi::shared_get(&self.snapshot) else {
                return Publish::Failed;
            };
            let Some(held) = snapshot_stamp(&current) else {
                return Publish::Failed;
            };
            if abi::shared_set(&self.version, &encode_stamp(&held), 0).is_err() {
                return Publish::Failed;
            }
            if abi::shared_get(&self.snapshot).is_ok_and(|(_, again)| again == cas) {
                return if held == *stamp {
                    Publish::Stored
                } else {
                    Publish::Kept(held)
                };
            }
        }
        Publish::Failed
    }

    /// Writes the snapshot key unless it holds this snapshot already (`Ok`) or one it keeps.
    fn offer(&self, stamp: &Stamp, value: &[u8]) -> Result<(), Publish> {
        for _ in 0..CAS_RETRIES {
            let Ok((current, cas)) = abi::shared_get(&self.snapshot) else {
                return Err(Publish::Failed);
            };
            // An unreadable value is as good as none.
            let held = current.as_deref().and_then(snapshot_stamp);
            match stamp.against(held.as_ref()) {
                Standing::Same => return Ok(()),
                Standing::Stale => return Err(Publish::Kept(held.unwrap_or_default())),
                Standing::Supersedes => {}
            }
            match abi::shared_set(&self.snapshot, value, cas) {
                Ok(()) => return Ok(()),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(_)) => return Err(Publish::Failed),
            }
        }
        Err(Publish::Failed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(epoch: Option<&str>, version: u64) -> Stamp {
        Stamp {
            epoch: epoch.map(|e| Epoch::try_from(e.as_bytes()).unwrap()),
            version,
        }
    }

    #[test]
    fn the_version_key_holds_version_then_epoch() {
        for s in [stamp(None, 0), stamp(None, 7), stamp(Some("e-1"), u64::MAX)] {
            assert_eq!(decode_stamp(&encode_stamp(&s)), Some(s));
        }
        // A VM from before epochs wrote 8 bytes, and reads the first 8 of ours.
        assert_eq!(decode_stamp(&9u64.to_le_bytes()), Some(stamp(None, 9)));
        let ours = encode_stamp(&stamp(Some("e"), 9));
        assert_eq!(u64_at(&ours, 0), Some(9));
        let mut bad = 9u64.to_le_bytes().to_vec();
        bad.extend_from_slice(b"not an epoch");
        assert_eq!(decode_stamp(&bad), None);
        assert_eq!(decode_stamp(&[1, 2, 3]), None);
    }

    #[test]
    fn the_snapshot_key_is_stamped_by_its_body() {
        let value = |prefix: u64, body: &str| {
            let mut v = prefix.to_le_bytes().to_vec();
            v.extend_from_slice(body.as_bytes());
            v
        };
        let doc = r#"{"version":4,"epoch":"e2","rollouts":[]}"#;
        assert_eq!(snapshot_stamp(&value(4, doc)), Some(stamp(Some("e2"), 4)));
        assert_eq!(
            snapshot_stamp(&value(4, r#"{"version":4}"#)),
            Some(stamp(None, 4))
        );
        // A prefix that disagrees with its body, or a body that does not parse: unreadable.
        assert_eq!(snapshot_stamp(&value(5, doc)), None);
        assert_eq!(snapshot_stamp(&value(4, "garbage")), None);
        assert_eq!(snapshot_stamp(b"short"), None);
    }
}
