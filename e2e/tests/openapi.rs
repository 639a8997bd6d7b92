//! Schemathesis fuzzes a real `linnet serve` on loopback from the document it serves at
//! `/v1/openapi.json`: no answer may be a 5xx, and every status, content type and body must
//! be one the document declares. Bounded: a few examples per operation, a time budget, and a
//! hard deadline after which the run is killed and the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use linnet_e2e::sidecar::{Sidecar, ADMIN_TOKEN};
use linnet_e2e::{repo_root, run_bounded, TestDir};
use std::process::Command;
use std::time::Duration;

/// Schemathesis's own budget for the whole run, in seconds.
const MAX_TIME_S: u32 = 60;
/// Past this the run is killed: the budget, plus start-up and the last requests.
const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_break() {
    let st = repo_root().join(".venv/bin/schemathesis");
    assert!(
        st.is_file(),
        "no {}: run `make setup` (scripts/setup.sh installs it)",
        st.display()
    );
    let dir = TestDir::new("openapi", "schemathesis").unwrap();
    let sidecar = Sidecar::start(dir.path()).unwrap();
    let out_path = dir.path().join("schemathesis.out");
    let (status, report) = run_bounded(
        Command::new(&st)
            .current_dir(dir.path())
            .arg("run")
            .arg(format!("http://{}/v1/openapi.json", sidecar.addr))
            .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
            ])
            // The event stream never ends by design, and a snapshot poll at the current version
            // is held for up to its timeout (5 minutes at most): both would spend the budget
            // waiting. tests/sse.rs and tests/limits.rs in the sidecar cover them.
            .args(["--exclude-path", "/v1/events", "--exclude-path", "/v1/snapshot"])
            // A hang fails the run; a slow answer does not: every change is fsynced before it is
            // answered, and behind other disk traffic one fsync has taken over 5 s here.
            .args(["--max-examples", "20", "--seed", "1", "--request-timeout", "30"])
            .args(["--max-time", &MAX_TIME_S.to_string()]),
        &out_path,
        DEADLINE,
    )
    .unwrap();
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{report}\nsidecar log:\n{}",
        sidecar.log()
    );
    // "Test cases:" is followed by "N generated, N passed".
    let cases = report
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert!(cases.contains("passed"), "no case count in:\n{report}");
    assert!(!cases.contains("failed"), "{cases}:\n{report}");
    println!("schemathesis: {cases}");
}
