//! Who may call what, across every way the tokens can be set; and the real `linnet serve`
//! with no token given: it makes an owner-only token file, requires it, never prints it,
//! keeps it across restarts, and refuses bad tokens and token files at start-up by name.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use linnet_sidecar::client::Client;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const READS: &[&str] = &[
    "/v1/rollouts",
    "/v1/rollouts/web",
    "/v1/rollouts/web/explain",
    "/v1/history",
    "/v1/audit",
    "/v1/kill-switch",
    "/metrics",
    "/v1/events",
];

/// The status only: an event stream's body never ends.
async fn status_of(h: &Harness, path: &str, token: Option<&str>) -> StatusCode {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    h.app
        .handle(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .status()
}

async fn mutate(h: &Harness, token: Option<&str>) -> StatusCode {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    h.request(
        Method::POST,
        "/v1/kill-switch",
        r#"{"on": false}"#,
        &headers,
    )
    .await
    .status
}

#[tokio::test(start_paused = true)]
async fn every_call_needs_its_token() {
    const OK: StatusCode = StatusCode::OK;
    const NO: StatusCode = StatusCode::UNAUTHORIZED;
    for poll in [Some(POLL), None] {
        for open_reads in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = api_config();
            config.auth.poll = poll.map(str::to_owned);
            config.auth.open_reads = open_reads;
            let h = Harness::open_with(&dir.path().join("l.db"), EPOCH_MS, config);
            let case = format!("poll token {poll:?}, open reads {open_reads}");
            let r = h
                .create_yaml("name: web\nsteps: [{weight: 10, pause: 1h}]")
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{case}");

            // Changes: the admin token, always.
            assert_eq!(mutate(&h, None).await, NO, "{case}");
            assert_eq!(mutate(&h, Some(POLL)).await, NO, "{case}");
            assert_eq!(mutate(&h, Some("nope")).await, NO, "{case}");
            assert_eq!(mutate(&h, Some(ADMIN)).await, OK, "{case}");

            // Reads: the admin token, unless reads are open; the poll token is not for them,
            // and a wrong token is refused even where none is needed, so a client learns it
            // (and a revoked key is refused at once).
            let anyone = if open_reads { OK } else { NO };
            for path in READS {
                assert_eq!(status_of(&h, path, None).await, anyone, "{case}: {path}");
                assert_eq!(
                    status_of(&h, path, Some(POLL)).await,
                    NO,
                    "{case}: {path} with the poll token"
                );
                assert_eq!(status_of(&h, path, Some(ADMIN)).await, OK, "{case}: {path}");
            }

            // The snapshot: the poll token when there is one, the admin token always,
            // never nobody, open reads or not.
            let snapshot = "/v1/snapshot";
            assert_eq!(status_of(&h, snapshot, None).await, NO, "{case}");
            assert_eq!(status_of(&h, snapshot, Some("nope")).await, NO, "{case}");
            assert_eq!(status_of(&h, snapshot, Some(ADMIN)).await, OK, "{case}");
            let with_poll = if poll.is_some() { OK } else { NO };
            assert_eq!(
                status_of(&h, snapshot, Some(POLL)).await,
                with_poll,
                "{case}"
            );

            // Health, for anyone.
            for path in ["/healthz", "/readyz"] {
                assert_eq!(status_of(&h, path, None).await, OK, "{case}: {path}");
            }
            h.close().await;
        }
    }
}

/// `linnet serve` as a child process, its stderr collected.
struct Serve {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Serve {
    fn start(dir: &Path, args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linnet"))
            .args(["serve", "--listen", "127.0.0.1:0", "--drain-timeout", "1s"])
            .arg("--db")
            .arg(dir.join("linnet.db"))
            .args(args)
            .env_remove("LINNET_TOKEN")
            .env_remove("LINNET_TOKEN_FILE")
            .env_remove("LINNET_POLL_TOKEN")
            .env_remove("LINNET_OPEN_READS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Serve { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address it listens on, from its log.
    async fn addr(&mut self) -> String {
        for _ in 0..1000 {
            let log = self.log();
            if let Some(at) = log.find("addr=") {
                let rest = &log[at + 5..];
                return rest[..rest.find(' ').unwrap()].to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("linnet serve exited ({status}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("linnet serve did not listen:\n{}", self.log());
    }

    /// Waits for it to exit by itself: a refusal at start-up.
    async fn refusal(mut self) -> String {
        for _ in 0..1000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(!status.success(), "{}", self.log());
                tokio::time::sleep(Duration::from_millis(50)).await; // the last lines
                return self.log();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("linnet serve did not refuse:\n{}", self.log());
    }

    fn stop(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        self.log()
    }
}

const SPEC: &str = "name: web\nsteps: [{weight: 10, pause: 1h}]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_token_makes_an_owner_only_token_file_and_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    let mut serve = Serve::start(dir.path(), &[]);
    let url = format!("http://{}", serve.addr().await);

    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(token.len() >= 32, "{token:?}");

    let body = || Some((Bytes::from(SPEC), "application/yaml"));
    let nobody = Client::new(&url, None).unwrap();
    let (status, _) = nobody
        .send(Method::POST, "/v1/rollouts", body())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Loopback grants no read either.
    let (status, _) = nobody
        .send(Method::GET, "/v1/rollouts", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = nobody
        .send(Method::GET, "/v1/snapshot", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let admin = Client::new(&url, Some(token.clone())).unwrap();
    let (status, _) = admin
        .send(Method::POST, "/v1/rollouts", body())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);

    // The CLI on this host finds the file beside the database by itself.
    let cli = Command::new(env!("CARGO_BIN_EXE_linnet"))
        .args(["--server", &url, "rollout", "pause", "web", "--db"])
        .arg(dir.path().join("linnet.db"))
        .env_remove("LINNET_TOKEN")
        .env_remove("LINNET_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("paused"),
        "{cli:?}"
    );

    let log = serve.stop();
    assert!(!log.contains(&token), "the token is in the output:\n{log}");
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains("created"), "{log}");

    // A restart keeps the token.
    let mut serve = Serve::start(dir.path(), &[]);
    let url = format!("http://{}", serve.addr().await);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    let admin = Client::new(&url, Some(token.clone())).unwrap();
    let s = admin
        .json(Method::GET, "/v1/rollouts/web", None)
        .await
        .unwrap();
    assert_eq!(s["state"], "paused");
    let log = serve.stop();
    assert!(!log.contains(&token) && log.contains("reused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_token_files_are_refused_at_start_up_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.token");
    let custom = dir.path().join("custom.token");
    let set = |path: &Path, contents: &str, mode: u32| {
        std::fs::write(path, contents).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // What to do to the directory first, the flags, and the words the refusal must say.
    type Prepare<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(Prepare, Vec<String>, &[&str])> = vec![
        (
            Box::new(|| {}),
            vec!["--token".into(), String::new()],
            &["--token is empty"],
        ),
        (
            Box::new(|| {}),
            vec!["--poll-token".into(), String::new()],
            &["--poll-token is empty"],
        ),
        (
            Box::new(|| {}),
            vec!["--token".into(), "two words".into()],
            &["--token contains ' '"],
        ),
        (
            Box::new(|| set(&file, "s3cret\n", 0o644)),
            vec![],
            &["admin.token", "mode 0644", "chmod 600"],
        ),
        (
            Box::new(|| set(&file, "", 0o600)),
            vec![],
            &["admin.token", "empty"],
        ),
        (
            Box::new(|| {
                std::fs::remove_file(&file).unwrap();
                std::fs::create_dir(&file).unwrap();
            }),
            vec![],
            &["admin.token", "not a regular file"],
        ),
        (
            Box::new(|| set(&custom, "s3cret\n", 0o604)),
            vec!["--token-file".into(), custom.display().to_string()],
            &["custom.token", "mode 0604"],
        ),
        (
            Box::new(|| {}),
            vec![
                "--token".into(),
                "s3cret".into(),
                "--token-file".into(),
                custom.display().to_string(),
            ],
            &["--token or --token-file"],
        ),
        (
            Box::new(|| {}),
            vec![
                "--token-file".into(),
                dir.path().join("no/such/dir").display().to_string(),
            ],
            &["no/such/dir", "cannot create"],
        ),
    ];
    for (prepare, args, words) in cases {
        prepare();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = Serve::start(dir.path(), &args).refusal().await;
        for w in words {
            assert!(log.contains(w), "{args:?}: {w:?} not in\n{log}");
        }
        assert!(!log.contains("s3cret"), "{args:?}: the token is in\n{log}");
        // Refused before the store was opened.
        assert!(!dir.path().join("linnet.db").exists(), "{args:?}");
    }
}

/// `linnet key …` against the real binary: the secret printed once (and only on stdout), the
/// key acting under its name, listed without its secret, revoked, and refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_commands_make_list_and_revoke_a_key_that_acts_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path(), &["--token", "adm-token"]);
    let url = format!("http://{}", serve.addr().await);
    let linnet = |token: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_linnet"))
            .args(["--server", &url, "--token", token])
            .args(args)
            .env_remove("LINNET_TOKEN")
            .env_remove("LINNET_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let made = linnet(
        "adm-token",
        &[
            "key", "create", "--name", "ci", "--scope", "operate", "--rate", "5",
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let secret = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("lnk_") && secret.len() == 68,
        "{secret:?}"
    );
    let said = String::from_utf8_lossy(&made.stderr);
    assert!(said.contains("will not be shown again"), "{said}");

    let admin = Client::new(&url, Some("adm-token".into())).unwrap();
    let (status, _) = admin
        .send(
            Method::POST,
            "/v1/rollouts",
            Some((Bytes::from(SPEC), "application/yaml")),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let paused = linnet(&secret, &["rollout", "pause", "web"]);
    assert!(paused.status.success(), "{paused:?}");
    // Operate may not create: the CLI says why.
    let refused = linnet(&secret, &["kill-switch", "on"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("key \"ci\" has scope operate; POST /v1/kill-switch needs admin"),
        "{why}"
    );
    let audit = admin.json(Method::GET, "/v1/audit", None).await.unwrap();
    let paused_by: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "paused")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(paused_by, ["ci"]);

    let list = linnet("adm-token", &["key", "list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && listed.contains("ci") && listed.contains("operate"),
        "{list:?}"
    );
    assert!(!listed.contains(&secret[4..]), "{listed}");
    let revoked = linnet("adm-token", &["key", "revoke", "ci"]);
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked"));
    let after = linnet(&secret, &["rollout", "list"]);
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("key \"ci\" is revoked"),
        "{after:?}"
    );
    let log = serve.stop();
    assert!(!log.contains(&secret), "the secret is in the log:\n{log}");
}
