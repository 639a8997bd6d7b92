//! The harness itself, on hand-made modules: loading errors and traps say what went wrong.
//! (Harness checks that need the filter live in `tests/filter/host.rs`.)
// clippy.toml allows these in #[test] functions only; test helpers fail the same way.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_wasm_tests::{deserialize_map, serialize_map, Vm};
use std::path::PathBuf;

/// A module that imports `env.proxy_bogus: [] -> []` and nothing else.
const BOGUS_IMPORT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one func type [] -> []
    0x02, 0x13, 0x01, // import section, 19 bytes, one import
    0x03, b'e', b'n', b'v', 0x0b, b'p', b'r', b'o', b'x', b'y', b'_', b'b', b'o', b'g', b'u', b's',
    0x00, 0x00,
];

/// A module whose `_initialize` executes `unreachable`.
const TRAPS_ON_INIT: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: one func type [] -> []
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x0f, 0x01, 0x0b, b'_', b'i', b'n', b'i', b't', b'i', b'a', b'l', b'i', b'z', b'e', 0x00,
    0x00, 0x0a, 0x05, 0x01, 0x03, 0x00, 0x00, 0x0b, // code: no locals, unreachable, end
];

/// Writes `bytes` to a file of its own and loads it.
fn load(name: &str, bytes: &[u8]) -> anyhow::Result<Vm> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("linnet-wasm-tests-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    let vm = Vm::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    vm
}

#[test]
fn unknown_import_fails_loading_with_its_name() {
    let message = format!(
        "{:#}",
        load("bogus", BOGUS_IMPORT)
            .err()
            .expect("loading must fail")
    );
    assert!(message.contains("unknown import"), "{message}");
    assert!(message.contains("env::proxy_bogus"), "{message}");
}

#[test]
fn a_trap_is_an_error_with_its_message() {
    let message = format!(
        "{:#}",
        load("trap", TRAPS_ON_INIT)
            .err()
            .expect("loading must fail")
    );
    assert!(message.contains("wasm trap in _initialize"), "{message}");
    assert!(message.contains("unreachable"), "{message}");
}

#[test]
fn missing_file_says_so() {
    let err = Vm::load(std::path::Path::new("/nonexistent/linnet.wasm"))
        .err()
        .expect("must fail");
    assert!(format!("{err:#}").contains("/nonexistent/linnet.wasm"));
}

#[test]
fn header_map_wire_format_round_trips() {
    let map = vec![
        (b"a".to_vec(), b"1".to_vec()),
        (b"a".to_vec(), b"\xff".to_vec()),
        (b":path".to_vec(), Vec::new()),
    ];
    let bytes = serialize_map(&map);
    assert_eq!(&bytes[..4], &3u32.to_le_bytes());
    assert_eq!(&bytes[4..12], &[1, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(&bytes[28..32], b"a\x001\x00");
    assert_eq!(deserialize_map(&bytes), Some(map));
    assert_eq!(deserialize_map(&bytes[..bytes.len() - 1]), None);
    assert_eq!(deserialize_map(&[]), Some(Vec::new()));
}
