//! The harness's shared data has Envoy's compare-and-swap semantics (no .wasm needed).

use linnet_wasm_tests::{SharedData, Status};
use std::thread;

#[test]
fn get_returns_value_and_cas() {
    let shared = SharedData::new();
    assert_eq!(shared.get(b"k"), None);
    let cas = shared.set(b"k", b"v1", 0).unwrap();
    assert_ne!(cas, 0);
    assert_eq!(shared.get(b"k"), Some((b"v1".to_vec(), cas)));
}

#[test]
fn each_write_bumps_the_cas() {
    let shared = SharedData::new();
    let a = shared.set(b"k", b"1", 0).unwrap();
    let b = shared.set(b"k", b"2", a).unwrap();
    let c = shared.set(b"other", b"x", 0).unwrap();
    let d = shared.set(b"k", b"3", 0).unwrap();
    assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
}

#[test]
fn stale_cas_is_a_mismatch_and_changes_nothing() {
    let shared = SharedData::new();
    let first = shared.set(b"k", b"1", 0).unwrap();
    let second = shared.set(b"k", b"2", first).unwrap();
    assert_eq!(shared.set(b"k", b"3", first), Err(Status::CasMismatch));
    assert_eq!(Status::CasMismatch as u32, 8);
    assert_eq!(shared.get(b"k"), Some((b"2".to_vec(), second)));
}

#[test]
fn cas_zero_writes_unconditionally() {
    let shared = SharedData::new();
    shared.set(b"k", b"1", 0).unwrap();
    shared.set(b"k", b"2", 0).unwrap();
    assert_eq!(shared.get(b"k").unwrap().0, b"2");
}

#[test]
fn clones_share_one_store() {
    let a = SharedData::new();
    let b = a.clone();
    let cas = a.set(b"k", b"v", 0).unwrap();
    assert_eq!(b.get(b"k"), Some((b"v".to_vec(), cas)));
    assert_eq!(b.set(b"k", b"w", cas + 100), Err(Status::CasMismatch));
    assert_eq!(a.keys(), vec![b"k".to_vec()]);
}

#[test]
fn concurrent_read_modify_write_loses_nothing() {
    let shared = SharedData::new();
    shared.set(b"n", b"0", 0).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let shared = shared.clone();
            thread::spawn(move || {
                for _ in 0..500 {
                    loop {
                        let (value, cas) = shared.get(b"n").unwrap();
                        let n: u64 = String::from_utf8(value).unwrap().parse().unwrap();
                        if shared
                            .set(b"n", (n + 1).to_string().as_bytes(), cas)
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(shared.get(b"n").unwrap().0, b"2000");
}
