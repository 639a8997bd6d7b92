//! The real thing: `Server` bound to 127.0.0.1:0, driven by a real HTTP client and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use hyper::{Method, StatusCode};
use linnet_sidecar::api::ApiConfig;
use linnet_sidecar::auth::Auth;
use linnet_sidecar::cli::{run, Cli};
use linnet_sidecar::client::Client;
use linnet_sidecar::clock::SystemClock;
use linnet_sidecar::retention::Retention;
use linnet_sidecar::server::{Server, ServerOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: dir.path().join("linnet.db"),
        api: ApiConfig {
            auth: Auth {
                admin: Some("adm".into()),
                poll: Some("pol".into()),
                open_reads: true,
                ..Auth::default()
            },
            ..ApiConfig::default()
        },
        retention: Retention::default(),
        clock: Arc::new(SystemClock),
        drain_timeout: Duration::from_secs(5),
        reports: None,
    })
    .await
    .unwrap();
    let url = format!("http://{}", server.addr());
    let admin = Client::new(&url, Some("adm".into())).unwrap();
    let poller = Client::new(&url, Some("pol".into())).unwrap();

    // The CLI, end to end: create from a file, control, look a user up.
    let spec = dir.path().join("web.yaml");
    std::fs::write(&spec, "name: web\nstickiness: [{header: x-user-id}]\nsteps: [{weight: 20, pause: until promoted}, {weight: 100}]\n").unwrap();
    let cli = |args: &[&str]| {
        let mut all = vec!["linnet", "--server", &url, "--token", "adm"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    };
    run(cli(&["validate", spec.to_str().unwrap()]))
        .await
        .unwrap();
    run(cli(&["rollout", "create", spec.to_str().unwrap()]))
        .await
        .unwrap();
    run(cli(&["rollout", "weight", "web", "25"])).await.unwrap();
    run(cli(&["rollout", "list"])).await.unwrap();
    run(cli(&["whereis", "web", "alice"])).await.unwrap();
    run(cli(&["kill-switch", "on", "--rollout", "web"]))
        .await
        .unwrap();
    let e = run(cli(&["rollout", "resume", "nope"])).await.unwrap_err();
    assert!(e.contains("404") && e.contains("nope"), "{e}");
    let e = run(cli(&[
        "rollout",
        "create",
        dir.path().join("missing.yaml").to_str().unwrap(),
    ]))
    .await
    .unwrap_err();
    assert!(e.contains("missing.yaml"), "{e}");

    let s = admin
        .json(Method::GET, "/v1/rollouts/web", None)
        .await
        .unwrap();
    assert_eq!(
        (
            s["state"].as_str(),
            s["weight"].as_f64(),
            s["kill_switch"].as_bool()
        ),
        (Some("paused"), Some(25.0), Some(true))
    );

    // Snapshot long-poll over the wire: current version → 304 after the timeout.
    let (status, body) = poller
        .send(Method::GET, "/v1/snapshot", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let doc = linnet_core::SnapshotDoc::from_json(&body).unwrap();
    let (status, body) = poller
        .send(
            Method::GET,
            &format!("/v1/snapshot?version={}&timeout_ms=100", doc.version),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    // And one held open across a change.
    let held = {
        let url = url.clone();
        let v = doc.version;
        tokio::spawn(async move {
            let c = Client::new(&url, Some("pol".into())).unwrap();
            c.send(
                Method::GET,
                &format!("/v1/snapshot?version={v}&timeout_ms=20000"),
                None,
            )
            .await
            .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    admin
        .json(
            Method::POST,
            "/v1/rollouts/web/kill-switch",
            Some(json!({"on": false})),
        )
        .await
        .unwrap();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let doc2 = linnet_core::SnapshotDoc::from_json(&body).unwrap();
    assert!(doc2.version > doc.version && !doc2.rollouts[0].kill_switch);

    // Shutdown with a long-poll in flight: it is answered (304) and the drain completes.
    let held = {
        let url = url.clone();
        let v = doc2.version;
        tokio::spawn(async move {
            let c = Client::new(&url, Some("pol".into()))
                .unwrap()
                .with_header("x-linnet-poller", "envoy-a");
            c.send(
                Method::GET,
                &format!("/v1/snapshot?version={v}&timeout_ms=300000"),
                None,
            )
            .await
        })
    };
    // Wait until the poll is held (the poller is counted as it arrives).
    loop {
        let (_, m) = admin.send(Method::GET, "/metrics", None).await.unwrap();
        if String::from_utf8_lossy(&m).contains("linnet_connected_filters 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .unwrap();
    let (status, _) = held.await.unwrap().unwrap();
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // No longer accepting.
    assert!(admin.send(Method::GET, "/healthz", None).await.is_err());
}
