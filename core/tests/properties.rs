//! Properties of the sticky bucket that users rely on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure should stop loudly

use linnet_core::{PluginConfig, Reason, Request, Rollout, Variant};
use proptest::prelude::*;
use std::borrow::Cow;

struct User(Option<Vec<u8>>);

impl Request for User {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        if name == "x-user-id" {
            self.0.as_deref().map(Cow::Borrowed)
        } else {
            None
        }
    }
    fn entropy(&self) -> [u8; 16] {
        [0; 16]
    }
}

fn rollout(name: &str, salt: Option<&str>, weight: f64) -> Rollout {
    let mut json = serde_json::json!({
        "rollouts": [{"name": name, "weight": weight, "stickiness": [{"header": "x-user-id"}]}]
    });
    if let Some(s) = salt {
        json["rollouts"][0]["salt"] = s.into();
    }
    let cfg = PluginConfig::from_json(json.to_string().as_bytes()).unwrap();
    cfg.compile(1).unwrap().rollouts.remove(0)
}

fn variant(r: &Rollout, key: &[u8]) -> Variant {
    r.decide(false, &User(Some(key.to_vec()))).variant
}

/// Deterministic pseudo-random keys (xorshift), so the test is reproducible.
fn random_keys(n: usize, mut state: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            format!("user-{state:016x}").into_bytes()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A key on the canary at weight w stays there at any w' > w.
    #[test]
    fn monotonic_in_weight(key in proptest::collection::vec(any::<u8>(), 0..48), w in 0u16..=10_000, dw in 0u16..=10_000) {
        let w2 = w.saturating_add(dw).min(10_000);
        let lo = rollout("r", None, f64::from(w) / 100.0);
        let hi = rollout("r", None, f64::from(w2) / 100.0);
        if variant(&lo, &key) == Variant::Canary {
            prop_assert_eq!(variant(&hi, &key), Variant::Canary);
        }
    }

    /// The decision depends only on the key: the same user always gets the same answer.
    #[test]
    fn sticky(key in "[a-z0-9-]{1,40}", w in 0u16..=10_000) {
        let r = rollout("r", None, f64::from(w) / 100.0);
        let first = r.decide(false, &User(Some(key.clone().into_bytes())));
        for _ in 0..3 {
            prop_assert_eq!(&r.decide(false, &User(Some(key.clone().into_bytes()))), &first);
        }
    }
}

#[test]
fn share_within_one_point_of_weight() {
    let keys = random_keys(100_000, 0x2545_f491_4f6c_dd1d);
    for weight in [1.0, 5.0, 20.0, 50.0, 99.0] {
        let r = rollout("checkout", None, weight);
        let canary = keys
            .iter()
            .filter(|k| variant(&r, k) == Variant::Canary)
            .count();
        let share = canary as f64 * 100.0 / keys.len() as f64;
        assert!(
            (share - weight).abs() <= 1.0,
            "weight {weight}%: share {share:.3}%"
        );
    }
}

#[test]
fn weight_zero_and_hundred_are_absolute() {
    let keys = random_keys(10_000, 7);
    let none = rollout("r", None, 0.0);
    let all = rollout("r", None, 100.0);
    assert!(keys.iter().all(|k| variant(&none, k) == Variant::Stable));
    assert!(keys.iter().all(|k| variant(&all, k) == Variant::Canary));
}

/// Two rollouts at 50% with different salts: their canary sets overlap as independent
/// coin flips would (about a quarter of users in both), not the same users.
#[test]
fn different_salts_pick_independent_users() {
    let keys = random_keys(100_000, 99);
    let a = rollout("search", None, 50.0);
    let b = rollout("checkout", None, 50.0);
    let same_salt = rollout("other", Some("search"), 50.0);
    let (mut both, mut same) = (0usize, 0usize);
    for k in &keys {
        let va = variant(&a, k);
        if va == Variant::Canary && variant(&b, k) == Variant::Canary {
            both += 1;
        }
        if va == variant(&same_salt, k) {
            same += 1;
        }
    }
    let both_share = both as f64 / keys.len() as f64;
    assert!(
        (both_share - 0.25).abs() < 0.01,
        "overlap {both_share:.4}, expected about 0.25"
    );
    // Same salt, whatever the name: exactly the same users.
    assert_eq!(same, keys.len());
}

#[test]
fn bucket_is_the_documented_formula() {
    // murmur3_x86_32("checkout:alice", 0) % 10000, computed by the independent crate.
    let reference =
        murmur3::murmur3_32(&mut std::io::Cursor::new(b"checkout:alice"), 0).unwrap() % 10_000;
    assert_eq!(
        u32::from(linnet_core::bucket(b"checkout", b"alice")),
        reference
    );
    let r = rollout("checkout", None, 100.0);
    let d = r.decide(false, &User(Some(b"alice".to_vec())));
    assert_eq!(d.bucket.map(u32::from), Some(reference));
    assert_eq!(d.reason, Reason::Bucket);
}
