//! Named API keys: a secret per caller with a scope (`read`, `operate`, `admin`) and a request
//! rate. The store keeps each key's SHA-256, never its secret, which is shown once, when the
//! key is made; the [`Keyring`] holds the same in memory so a request costs no store read,
//! and a revocation refuses the key from the very next request.
//!
//! Each key draws from its own token bucket ([`Buckets`]), so one caller's flood is answered
//! 429 without slowing anyone else's calls.

use crate::auth::Scope;
use crate::clock::Millis;
use linnet_core::ConfigError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// What every secret starts with, so a leaked one is recognised (by scanners too).
pub const SECRET_PREFIX: &str = "lnk_";
/// 256 random bits after the prefix.
const SECRET_BYTES: usize = 32;
/// Requests per second a key may make, sustained, unless it was given its own rate.
pub const DEFAULT_RATE: f64 = 20.0;
/// Requests a key may make at once after a quiet spell, unless it was given its own burst.
pub const DEFAULT_BURST: u32 = 40;
/// Names the audit uses for who acted, so no key may take them.
pub const RESERVED_NAMES: &[&str] = &[
    "admin",
    "anonymous",
    "analysis",
    "schedule",
    "deadline",
    "gate",
    "system",
];

/// `POST /v1/keys`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// 1 to 63 of a-z, 0-9, '-' and '_', starting with a letter or digit; not a name the
    /// audit uses (`admin`, `anonymous`, `analysis`, `schedule`, `deadline`, `gate`,
    /// `system`), and not one any key ever had.
    pub name: String,
    pub scope: Scope,
    /// Requests per second, sustained (default 20).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0)]
    pub rate: Option<f64>,
    /// Requests at once after a quiet spell (default 40).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub burst: Option<u32>,
}

/// A key as stored and listed: never its secret, never its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub name: String,
    pub scope: Scope,
    /// Requests per second, sustained.
    pub rate: f64,
    /// Requests at once after a quiet spell.
    pub burst: u32,
    /// `rate` and `burst` are the defaults (they follow the defaults if those change).
    pub default_limit: bool,
    pub created_at_ms: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<Millis>,
}

/// A key's row: what [`KeyInfo`] shows, and the hash the store keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret, lowercase hex.
    pub hash: String,
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    pub created_ms: Millis,
    pub revoked_ms: Option<Millis>,
}

/// A request rate: `rate` per second sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: u32,
}

/// The keys a request may present, by the hash of their secret.
#[derive(Clone, Default)]
pub struct Keyring {
    by_hash: Arc<RwLock<HashMap<String, Holder>>>,
}

/// What a presented secret turns out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Key {
        name: String,
        scope: Scope,
        limit: Limit,
    },
    Revoked {
        name: String,
    },
}

#[derive(Debug, Clone)]
struct Holder {
    name: String,
    scope: Scope,
    limit: Limit,
    revoked: bool,
}

/// One token bucket per caller, refilled by the clock.
#[derive(Debug, Default)]
pub struct Buckets {
    by_key: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: Millis,
}

// === impl KeySpec ===

impl KeySpec {
    /// The spec checked, each problem naming its field.
    pub fn validate(&self) -> Result<Limit, ConfigError> {
        linnet_core::config::validate_name("name", &self.name)?;
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            return Err(ConfigError {
                field: "name".into(),
                message: format!(
                    "{:?} is reserved: the audit uses it for who acted; choose another name",
                    self.name
                ),
            });
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(ConfigError {
                    field: "rate".into(),
                    message: format!("{r} is not a positive number of requests per second"),
                });
            }
        }
        if self.burst == Some(0) {
            return Err(ConfigError {
                field: "burst".into(),
                message: "0 would refuse every request; use 1 or more".into(),
            });
        }
        Ok(limit(self.rate, self.burst))
    }
}

/// A key's limit: its own, else the defaults.
pub fn limit(rate: Option<f64>, burst: Option<u32>) -> Limit {
    Limit {
        rate: rate.unwrap_or(DEFAULT_RATE),
        burst: burst.unwrap_or(DEFAULT_BURST),
    }
}

/// A new secret: the prefix and 256 random bits in hex.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random numbers for a new key: {e}"))?;
    Ok(format!("{SECRET_PREFIX}{}", hex(&bytes)))
}

/// SHA-256 of a secret, lowercase hex: what the store and the keyring keep.
pub fn hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === impl StoredKey ===

impl StoredKey {
    pub fn info(&self) -> KeyInfo {
        let l = limit(self.rate, self.burst);
        KeyInfo {
            name: self.name.clone(),
            scope: self.scope,
            rate: l.rate,
            burst: l.burst,
            default_limit: self.rate.is_none() && self.burst.is_none(),
            created_at_ms: self.created_ms,
            revoked_at_ms: self.revoked_ms,
        }
    }
}

// === impl Keyring ===

impl Keyring {
    /// The keys of the store, revoked ones included (so they are refused by name).
    pub fn new(keys: &[StoredKey]) -> Keyring {
        let ring = Keyring::default();
        for k in keys {
            ring.put(k);
        }
        ring
    }

    /// Adds a key, or marks it revoked.
    pub fn put(&self, k: &StoredKey) {
        let holder = Holder {
            name: k.name.clone(),
            scope: k.scope,
            limit: limit(k.rate, k.burst),
            revoked: k.revoked_ms.is_some(),
        };
        self.write().insert(k.hash.clone(), holder);
    }

    /// The key whose secret was presented. The lookup is by the secret's hash, so its timing
    /// says nothing about how close a guess came to a secret.
    pub fn find(&self, secret: &str) -> Option<Found> {
        if !secret.starts_with(SECRET_PREFIX) {
            return None;
        }
        let by_hash = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let h = by_hash.get(&hash(secret))?;
        Some(if h.revoked {
            Found::Revoked {
                name: h.name.clone(),
            }
        } else {
            Found::Key {
                name: h.name.clone(),
                scope: h.scope,
                limit: h.limit,
            }
        })
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Holder>> {
        self.by_hash.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are not secrets, but there is no reason to print them either.
        let n = self
            .by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        write!(f, "Keyring({n} keys)")
    }
}

// === impl Buckets ===

impl Buckets {
    /// Takes one request from `key`'s bucket at `now`; `Err` is how many whole seconds
    /// until one is there again (at least 1).
    pub fn take(&self, key: &str, limit: Limit, now: Millis) -> Result<(), u32> {
        let mut map = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        let burst = f64::from(limit.burst);
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at_ms: now,
        });
        // A clock that steps back refills nothing, and takes nothing away.
        let elapsed_s = (now - b.at_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed_s * limit.rate).min(burst);
        b.at_ms = b.at_ms.max(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait_s = (1.0 - b.tokens) / limit.rate;
        Err((wait_s.ceil() as u32).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> KeySpec {
        KeySpec {
            name: name.into(),
            scope: Scope::Operate,
            rate: None,
            burst: None,
        }
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert_eq!(
            spec("ci").validate().unwrap(),
            Limit {
                rate: DEFAULT_RATE,
                burst: DEFAULT_BURST
            }
        );
        assert_eq!(spec("Bad Name").validate().unwrap_err().field, "name");
        let e = spec("admin").validate().unwrap_err();
        assert!(e.message.contains("reserved"), "{e:?}");
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let s = KeySpec {
                rate: Some(rate),
                ..spec("ci")
            };
            assert_eq!(s.validate().unwrap_err().field, "rate");
        }
        let s = KeySpec {
            burst: Some(0),
            ..spec("ci")
        };
        assert_eq!(s.validate().unwrap_err().field, "burst");
    }

    #[test]
    fn secrets_are_found_by_hash_and_revocation_is_seen() {
        let secret = new_secret().unwrap();
        assert!(secret.starts_with(SECRET_PREFIX) && secret.len() == 4 + 64);
        assert_ne!(secret, new_secret().unwrap());
        let mut k = StoredKey {
            name: "ci".into(),
            scope: Scope::Read,
            hash: hash(&secret),
            rate: Some(2.0),
            burst: None,
            created_ms: 1,
            revoked_ms: None,
        };
        assert!(!k.hash.contains(&secret[4..]));
        let ring = Keyring::new(std::slice::from_ref(&k));
        assert_eq!(
            ring.find(&secret),
            Some(Found::Key {
                name: "ci".into(),
                scope: Scope::Read,
                limit: Limit {
                    rate: 2.0,
                    burst: DEFAULT_BURST
                }
            })
        );
        assert_eq!(ring.find("lnk_00"), None);
        assert_eq!(ring.find(&secret[4..]), None);
        k.revoked_ms = Some(2);
        ring.put(&k);
        assert_eq!(
            ring.find(&secret),
            Some(Found::Revoked { name: "ci".into() })
        );
        assert!(!format!("{ring:?}").contains(&k.hash));
    }

    #[test]
    fn a_bucket_refills_at_its_rate_and_says_when_to_retry() {
        let b = Buckets::default();
        let l = Limit {
            rate: 0.5,
            burst: 2,
        };
        assert_eq!(b.take("a", l, 0), Ok(()));
        assert_eq!(b.take("a", l, 0), Ok(()));
        // Empty: one token is 2 s away.
        assert_eq!(b.take("a", l, 0), Err(2));
        // Another key has its own bucket.
        assert_eq!(b.take("b", l, 0), Ok(()));
        assert_eq!(b.take("a", l, 1000), Err(1));
        assert_eq!(b.take("a", l, 2000), Ok(()));
        // Never more than the burst, however long the quiet.
        assert_eq!(b.take("a", l, 1_000_000), Ok(()));
        assert_eq!(b.take("a", l, 1_000_000), Ok(()));
        assert_eq!(b.take("a", l, 1_000_000), Err(2));
        // Back in time: no refill, no panic.
        assert_eq!(b.take("a", l, 0), Err(2));
    }
}
