//! Which snapshot a process keeps. A sidecar's versions only grow within one epoch (one run of
//! one sidecar); a new epoch starts its own count, which may begin below the old one's. So a
//! snapshot is known by its [`Stamp`], (epoch, version), and versions are compared only
//! within an epoch.

use serde::{Deserialize, Serialize};
use std::fmt;

const MAX_EPOCH_LEN: usize = 64;

/// A sidecar run's identity: 1 to 64 of `A-Z a-z 0-9 - _`, so that it travels as a query
/// parameter, a header and a shared-data value without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epoch(String);

/// What identifies a snapshot. `epoch` is `None` from a sidecar that predates epochs, and for
/// the plugin configuration's own rollouts (version 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: Option<Epoch>,
    pub version: u64,
}

/// How an incoming snapshot stands against the one already held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Nothing held, another epoch (whatever its version), or a higher version of this one.
    Supersedes,
    /// The very snapshot already held.
    Same,
    /// A lower version of the epoch held: a reply overtaken by a newer one.
    Stale,
}

/// Just the stamp of a snapshot document, read without building its rollouts.
#[derive(Deserialize)]
struct StampFields {
    version: u64,
    #[serde(default)]
    epoch: Option<Epoch>,
}

// === impl Epoch ===

impl Epoch {
    /// 32 lower-case hex digits: how a sidecar writes the random bits it draws at start.
    pub fn from_bits(bits: u128) -> Epoch {
        Epoch(format!("{bits:032x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Epoch {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_EPOCH_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Epoch(s))
        } else {
            Err(format!(
                "{s:?} is not an epoch: use 1 to {MAX_EPOCH_LEN} of A-Z, a-z, 0-9, '-' and '_'"
            ))
        }
    }
}

impl TryFrom<&[u8]> for Epoch {
    type Error = String;

    fn try_from(b: &[u8]) -> Result<Self, String> {
        Epoch::try_from(String::from_utf8_lossy(b).into_owned())
    }
}

impl From<Epoch> for String {
    fn from(e: Epoch) -> String {
        e.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Stamp ===

impl Stamp {
    /// How a snapshot stamped `self` stands against `held` (`None`: nothing held). Another
    /// epoch supersedes whatever its version: the sidecar that answered is the one serving
    /// now, and if it is not, the next poll (which sends this stamp) gets the current one at
    /// once. Within an epoch only a higher version does, so a reordered reply cannot undo a
    /// newer one.
    pub fn against(&self, held: Option<&Stamp>) -> Standing {
        match held {
            None => Standing::Supersedes,
            Some(h) if h.epoch != self.epoch => Standing::Supersedes,
            Some(h) if self.version > h.version => Standing::Supersedes,
            Some(h) if self.version == h.version => Standing::Same,
            Some(_) => Standing::Stale,
        }
    }

    /// The stamp of a snapshot document, without validating or building the rest of it.
    pub fn of_doc(json: &[u8]) -> Result<Stamp, crate::ConfigError> {
        let f: StampFields = crate::config::parse_json(json)?;
        Ok(Stamp {
            epoch: f.epoch,
            version: f.version,
        })
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.epoch {
            Some(e) => write!(f, "version {} of epoch {e}", self.version),
            None => write!(f, "version {}", self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(epoch: Option<&str>, version: u64) -> Stamp {
        Stamp {
            epoch: epoch.map(|e| Epoch::try_from(e.to_owned()).unwrap()),
            version,
        }
    }

    #[test]
    fn versions_are_compared_within_an_epoch_only() {
        use Standing::*;
        let held = stamp(Some("a"), 9);
        let cases = [
            // A new sidecar run (its database replaced) counts from 1 again.
            (stamp(Some("b"), 2), Supersedes),
            (stamp(Some("b"), 9), Supersedes),
            (stamp(Some("b"), 12), Supersedes),
            (stamp(Some("a"), 10), Supersedes),
            (stamp(Some("a"), 9), Same),
            // A reply from this run overtaken by a newer one.
            (stamp(Some("a"), 2), Stale),
            // A sidecar from before epochs (or after a downgrade) is another run too.
            (stamp(None, 2), Supersedes),
        ];
        for (incoming, want) in cases {
            assert_eq!(incoming.against(Some(&held)), want, "{incoming}");
        }
        assert_eq!(stamp(Some("a"), 0).against(None), Supersedes);
    }

    #[test]
    fn without_epochs_the_old_rule_holds() {
        let held = stamp(None, 5);
        assert_eq!(stamp(None, 6).against(Some(&held)), Standing::Supersedes);
        assert_eq!(stamp(None, 5).against(Some(&held)), Standing::Same);
        assert_eq!(stamp(None, 4).against(Some(&held)), Standing::Stale);
        assert_eq!(
            stamp(Some("a"), 1).against(Some(&held)),
            Standing::Supersedes
        );
    }

    #[test]
    fn an_epoch_is_a_short_plain_token() {
        for good in ["a", "0f3c9e1d2b4a5968", "run-2_B", &"x".repeat(64)] {
            assert!(Epoch::try_from(good.to_owned()).is_ok(), "{good}");
        }
        for bad in ["", " a", "a b", "a/b", "é", "a\n", &"x".repeat(65)] {
            let e = Epoch::try_from(bad.to_owned()).unwrap_err();
            assert!(e.contains("is not an epoch"), "{bad:?}: {e}");
        }
        assert!(Epoch::try_from(&b"\xff\xfe"[..]).is_err());
        let drawn = Epoch::from_bits(u128::MAX - 1);
        assert_eq!(drawn.as_str().len(), 32);
        assert_eq!(Epoch::try_from(drawn.to_string()), Ok(drawn));
    }

    #[test]
    fn the_stamp_of_a_document_skips_its_rollouts() {
        let s = Stamp::of_doc(br#"{"version":3,"epoch":"e1","rollouts":[{"any":"thing"}]}"#);
        assert_eq!(s.unwrap(), stamp(Some("e1"), 3));
        assert_eq!(Stamp::of_doc(br#"{"version":3}"#).unwrap(), stamp(None, 3));
        let e = Stamp::of_doc(br#"{"version":3,"epoch":"no spaces"}"#).unwrap_err();
        assert_eq!(e.field, "epoch");
        assert!(Stamp::of_doc(b"[]").is_err());
    }
}
