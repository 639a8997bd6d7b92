//! One full decision: key lookup in 1,000-entry cohort lists, hash, compare.
#![allow(clippy::unwrap_used)] // a benchmark: a broken fixture should stop it loudly

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use linnet_core::{PluginConfig, Request};
use std::borrow::Cow;

struct Req {
    user: Vec<u8>,
}

impl Request for Req {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        (name == "x-user-id").then_some(Cow::Borrowed(&self.user[..]))
    }
    fn entropy(&self) -> [u8; 16] {
        [7; 16]
    }
}

fn config() -> PluginConfig {
    let canary: Vec<String> = (0..1000).map(|i| format!("canary-user-{i}")).collect();
    let stable: Vec<String> = (0..1000).map(|i| format!("stable-user-{i}")).collect();
    let json = serde_json::json!({
        "rollouts": [{
            "name": "checkout",
            "match": {"authority": "checkout.local"},
            "weight": 20,
            "stickiness": [{"header": "x-user-id"}, {"cookie": "uid"}],
            "cohorts": {"canary": canary, "stable": stable},
        }]
    });
    PluginConfig::from_json(json.to_string().as_bytes()).unwrap()
}

fn bench(c: &mut Criterion) {
    let snapshot = config().compile(1).unwrap();
    // A short account id and a UUID: the hash's cost grows with the key.
    for (label, user) in [
        ("short key", &b"user-48213"[..]),
        ("uuid key", b"4f1c2d0e-9b1a-4a7e-8c55-0c7a3f1e9d21"),
    ] {
        let req = Req {
            user: user.to_vec(),
        };
        c.bench_function(
            &format!("decide, {label}: match + 1000-entry cohorts + bucket"),
            |b| {
                b.iter(|| {
                    let (_, _, d) = snapshot
                        .decide(
                            false,
                            black_box(b"checkout.local:10000"),
                            black_box(b"/cart"),
                            black_box(&req),
                        )
                        .unwrap();
                    black_box(d)
                })
            },
        );
        let rollout = &snapshot.rollouts[0];
        c.bench_function(&format!("bucket only, {label}"), |b| {
            b.iter(|| linnet_core::bucket(black_box(&rollout.salt), black_box(&req.user)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
