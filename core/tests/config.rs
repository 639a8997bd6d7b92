//! The plugin configuration: what is accepted, and how every refusal names its field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure should stop loudly

use linnet_core::{PluginConfig, Reason, Request, Variant};
use std::borrow::Cow;

fn err(json: &str) -> String {
    match PluginConfig::from_json(json.as_bytes()).and_then(|c| c.compile(0)) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e.to_string(),
    }
}

fn snapshot(json: &str) -> linnet_core::Snapshot {
    PluginConfig::from_json(json.as_bytes())
        .unwrap()
        .compile(0)
        .unwrap()
}

#[derive(Default)]
struct Req(Vec<(&'static str, &'static [u8])>);

impl Request for Req {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        // Owned on purpose: the decision must work for hosts that cannot lend their headers.
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| Cow::Owned(v.to_vec()))
    }
    fn entropy(&self) -> [u8; 16] {
        [0x5a; 16]
    }
}

#[test]
fn defaults() {
    let s = snapshot(r#"{"rollouts":[{"name":"checkout"}]}"#);
    assert_eq!(s.routing_header, "x-linnet-variant");
    assert_eq!(s.mirror_header, "x-linnet-mirror");
    let r = &s.rollouts[0];
    assert_eq!(r.weight.get(), 0);
    assert_eq!(&*r.salt, b"checkout");
    assert!(r.override_.is_none() && r.mirror.is_none() && !r.kill_switch);
    assert_eq!(snapshot("{}").rollouts.len(), 0);
}

#[test]
fn every_error_names_its_field() {
    let cases = [
        (
            r#"{"rollouts":[{"name":"a","wieght":3}]}"#,
            "rollouts[0]",
            "unknown field `wieght`",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":101}]}"#,
            "rollouts[0].weight",
            "outside 0..=100",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":-1}]}"#,
            "rollouts[0].weight",
            "outside",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":"NaN"}]}"#,
            "rollouts[0].weight",
            "invalid type",
        ),
        (
            r#"{"rollouts":[{"name":"a","weight":1.234}]}"#,
            "rollouts[0].weight",
            "two decimal",
        ),
        (
            r#"{"rollouts":[{"name":"a"},{"name":"a"}]}"#,
            "rollouts[1].name",
            "duplicate",
        ),
        (
            r#"{"rollouts":[{"name":"A b"}]}"#,
            "rollouts[0].name",
            "not a valid name",
        ),
        (
            r#"{"rollouts":[{"weight":1}]}"#,
            "rollouts[0]",
            "missing field `name`",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"header":"x user"}]}]}"#,
            "rollouts[0].stickiness[0]",
            "header name",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"ip":"x"}]}]}"#,
            "rollouts[0].stickiness[0]",
            "unknown variant `ip`",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"cookie":"a;b"}]}]}"#,
            "rollouts[0].stickiness[0]",
            "cookie name",
        ),
        (
            r#"{"rollouts":[{"name":"a","anonymous":{"policy":"coin"}}]}"#,
            "rollouts[0].anonymous",
            "unknown variant `coin`",
        ),
        (
            r#"{"rollouts":[{"name":"a","anonymous":{"policy":"random","cokie":"x"}}]}"#,
            "rollouts[0].anonymous",
            "unknown field `cokie`",
        ),
        (
            r#"{"rollouts":[{"name":"a","cohorts":{"canary":["u"],"stable":["u"]}}]}"#,
            "rollouts[0].cohorts",
            "both",
        ),
        (
            r#"{"rollouts":[{"name":"a","override":{"token":""}}]}"#,
            "rollouts[0].override.token",
            "empty",
        ),
        (
            r#"{"rollouts":[{"name":"a","mirror":{"cluster":"","percent":5}}]}"#,
            "rollouts[0].mirror.cluster",
            "cluster name",
        ),
        (
            r#"{"rollouts":[{"name":"a","mirror":{"cluster":"c","percent":500}}]}"#,
            "rollouts[0].mirror.percent",
            "outside",
        ),
        (
            r#"{"rollouts":[{"name":"a","match":{"authority":"a*.b"}}]}"#,
            "rollouts[0].match.authority",
            "wildcard",
        ),
        (
            r#"{"rollouts":[{"name":"a","match":{"path_prefix":"api"}}]}"#,
            "rollouts[0].match.path_prefix",
            "start with '/'",
        ),
        (
            r#"{"rollouts":[{"name":"a","stickiness":[{"header":"x-linnet-variant"}]}]}"#,
            "rollouts[0]",
            "Linnet's own header",
        ),
        (
            r#"{"routing_header":"x-a","mirror_header":"x-a"}"#,
            "mirror_header",
            "must differ",
        ),
        (r#"{"rollouts":{}}"#, "rollouts", "invalid type"),
        (r#"{"rollouts":[{"name":"a"}]"#, "", "EOF"),
        (r#"{"killswitch":true}"#, "", "unknown field `killswitch`"),
        (r#"{"sidecar":{}}"#, "sidecar", "missing field `cluster`"),
        (
            r#"{"sidecar":{"cluster":""}}"#,
            "sidecar.cluster",
            "must name",
        ),
        (
            r#"{"sidecar":{"cluster":"s","path":"v1"}}"#,
            "sidecar.path",
            "start with '/'",
        ),
        (
            r#"{"sidecar":{"cluster":"s","poll_timeout_ms":5}}"#,
            "sidecar.poll_timeout_ms",
            "between",
        ),
        (
            r#"{"mark_stable":"yes"}"#,
            "mark_stable",
            "expected a boolean",
        ),
        (
            r#"{"sidecar":{"cluster":"s","on_stale":"maybe"}}"#,
            "sidecar.on_stale",
            "unknown variant `maybe`",
        ),
        (
            r#"{"sidecar":{"cluster":"s","stale_after_s":0}}"#,
            "sidecar.stale_after_s",
            "at least 1",
        ),
    ];
    for (json, field, words) in cases {
        let e = err(json);
        assert!(
            e.starts_with(field),
            "{json}\n  error {e:?} should start with field {field:?}"
        );
        assert!(
            e.contains(words),
            "{json}\n  error {e:?} should say {words:?}"
        );
    }
}

#[test]
fn decision_order_kill_switch_override_cohort_bucket() {
    let json = r#"{"rollouts":[{
        "name":"checkout","weight":100,
        "stickiness":[{"header":"x-user-id"},{"cookie":"uid"}],
        "cohorts":{"canary":["carol"],"stable":["bob"]},
        "override":{"token":"s3cret"}
    }]}"#;
    let s = snapshot(json);
    let r = &s.rollouts[0];
    let d = |req: &Req| {
        let d = r.decide(false, req);
        (d.variant, d.reason)
    };
    // Weight 100: an ordinary user is on the canary by bucket.
    assert_eq!(
        d(&Req(vec![("x-user-id", b"zed")])),
        (Variant::Canary, Reason::Bucket)
    );
    // A stable cohort beats the bucket; the cookie is used when the header is absent.
    assert_eq!(
        d(&Req(vec![("cookie", b"a=1; uid=bob")])),
        (Variant::Stable, Reason::Cohort)
    );
    // The header wins over the cookie as the first source.
    assert_eq!(
        d(&Req(vec![("x-user-id", b"carol"), ("cookie", b"uid=bob")])),
        (Variant::Canary, Reason::Cohort)
    );
    // An override with the right token beats the cohort...
    let with_token = Req(vec![
        ("x-user-id", b"carol"),
        ("x-linnet-override", b"stable"),
        ("x-linnet-override-token", b"s3cret"),
    ]);
    assert_eq!(d(&with_token), (Variant::Stable, Reason::Override));
    // ...a wrong or missing token is rejected and falls through to the cohort.
    for token in [&b"s3cre"[..], b"s3cret ", b""] {
        let req = Req(vec![
            ("x-user-id", b"carol"),
            ("x-linnet-override", b"stable"),
            ("x-linnet-override-token", token),
        ]);
        let dec = r.decide(false, &req);
        assert_eq!(
            (dec.variant, dec.reason, dec.override_rejected),
            (Variant::Canary, Reason::Cohort, true)
        );
    }
    let bogus = Req(vec![
        ("x-user-id", b"bob"),
        ("x-linnet-override", b"CANARY"),
        ("x-linnet-override-token", b"s3cret"),
    ]);
    assert!(r.decide(false, &bogus).override_rejected);
    // The kill switch beats everything, globally or per rollout.
    assert_eq!(r.decide(true, &with_token).reason, Reason::KillSwitch);
    assert_eq!(r.decide(true, &with_token).variant, Variant::Stable);
    let killed = snapshot(&json.replace(r#""weight":100"#, r#""weight":100,"kill_switch":true"#));
    assert_eq!(
        killed.rollouts[0].decide(false, &with_token).reason,
        Reason::KillSwitch
    );
}

#[test]
fn override_without_token_and_disabled_override() {
    let open = snapshot(r#"{"rollouts":[{"name":"a","override":{}}]}"#);
    let req = Req(vec![("x-linnet-override", b"canary")]);
    assert_eq!(
        open.rollouts[0].decide(false, &req).variant,
        Variant::Canary
    );
    let closed = snapshot(r#"{"rollouts":[{"name":"a"}]}"#);
    let d = closed.rollouts[0].decide(false, &req);
    assert_eq!(
        (d.variant, d.reason, d.override_rejected),
        (Variant::Stable, Reason::Anonymous, false)
    );
}

#[test]
fn anonymous_policies() {
    let stable = snapshot(
        r#"{"rollouts":[{"name":"a","weight":100,"stickiness":[{"header":"x-user-id"}]}]}"#,
    );
    let d = stable.rollouts[0].decide(false, &Req::default());
    assert_eq!(
        (d.variant, d.reason, d.mint),
        (Variant::Stable, Reason::Anonymous, None)
    );

    let random = snapshot(
        r#"{"rollouts":[{"name":"a","weight":50,"anonymous":{"policy":"random","max_age_s":60}}]}"#,
    );
    let r = &random.rollouts[0];
    let d = r.decide(false, &Req::default());
    let mint = d.mint.clone().expect("a key is minted");
    assert_eq!(mint.name, "linnet_uid");
    assert_eq!(mint.max_age_s, 60);
    assert_eq!(mint.key, "5a".repeat(16));
    assert_eq!(
        d.bucket,
        Some(linnet_core::bucket(b"a", mint.key.as_bytes()))
    );
    // The minted cookie is a key source: the next request is sticky and mints nothing.
    let cookie = format!("linnet_uid={}", mint.key);
    let cookie: &'static [u8] = Box::leak(cookie.into_bytes().into_boxed_slice());
    let next = r.decide(false, &Req(vec![("cookie", cookie)]));
    assert_eq!(
        (next.variant, next.bucket, next.mint),
        (d.variant, d.bucket, None)
    );
}

#[test]
fn mirror_only_copies_stable_bound_requests() {
    let s = snapshot(
        r#"{"rollouts":[{"name":"a","weight":50,"stickiness":[{"header":"x-user-id"}],"mirror":{"cluster":"a-shadow"}}]}"#,
    );
    let r = &s.rollouts[0];
    let mut seen = [0usize; 2];
    for i in 0..200 {
        let key: &'static [u8] = Box::leak(format!("u{i}").into_bytes().into_boxed_slice());
        let d = r.decide(false, &Req(vec![("x-user-id", key), ("x-request-id", key)]));
        match d.variant {
            Variant::Stable => assert_eq!(d.mirror.as_deref(), Some("a-shadow")),
            Variant::Canary => assert_eq!(d.mirror, None),
        }
        seen[d.variant as usize] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0);
    // Under the kill switch nothing is copied to the canary.
    assert_eq!(
        r.decide(true, &Req(vec![("x-user-id", b"u1")])).mirror,
        None
    );
}

#[test]
fn mirror_percent_samples_by_request_id() {
    let s = snapshot(r#"{"rollouts":[{"name":"a","mirror":{"cluster":"c","percent":10}}]}"#);
    let r = &s.rollouts[0];
    let mut mirrored = 0;
    for i in 0..10_000 {
        let id: &'static [u8] = Box::leak(format!("req-{i}").into_bytes().into_boxed_slice());
        let req = Req(vec![("x-request-id", id)]);
        let d = r.decide(false, &req);
        // The same request id always gets the same answer.
        assert_eq!(d.mirror, r.decide(false, &req).mirror);
        mirrored += usize::from(d.mirror.is_some());
    }
    assert!(
        (900..=1100).contains(&mirrored),
        "{mirrored} of 10000 mirrored at 10%"
    );
}

#[test]
fn the_most_specific_rollout_wins_whatever_the_order_or_names() {
    // Written least specific first, with names that sort the other way round.
    let s = snapshot(
        r#"{"rollouts":[
        {"name":"a-everything"},
        {"name":"b-any-sub","match":{"authority":"*.shop.local"}},
        {"name":"c-web","match":{"authority":"shop.local"}},
        {"name":"d-api","match":{"authority":"shop.local","path_prefix":"/api"}},
        {"name":"e-api-v2","match":{"authority":"shop.local","path_prefix":"/api/v2"}}]}"#,
    );
    let name = |a: &[u8], p: &[u8]| s.find(a, p).map(|(_, r)| r.name.clone());
    assert_eq!(
        name(b"shop.local:10000", b"/api/x").as_deref(),
        Some("d-api")
    );
    assert_eq!(
        name(b"shop.local", b"/api/v2/cart").as_deref(),
        Some("e-api-v2")
    );
    assert_eq!(name(b"shop.local", b"/").as_deref(), Some("c-web"));
    assert_eq!(
        name(b"eu.shop.local", b"/api").as_deref(),
        Some("b-any-sub")
    );
    assert_eq!(name(b"other.local", b"/").as_deref(), Some("a-everything"));
    // The index returned is the compiled position, which the filter's metrics follow.
    let (i, r) = s.find(b"shop.local", b"/").unwrap();
    assert_eq!(s.rollouts[i].name, r.name);
}

#[test]
fn snapshot_doc_replaces_rollouts_and_kill_switch_only() {
    use linnet_core::SnapshotDoc;
    let base = PluginConfig::from_json(
        br#"{"routing_header":"x-route","rollouts":[{"name":"a","weight":5}],"sidecar":{"cluster":"linnet"}}"#,
    )
    .unwrap();
    let doc = SnapshotDoc::from_json(
        br#"{"version":7,"kill_switch":true,"rollouts":[{"name":"b","weight":40}]}"#,
    )
    .unwrap();
    let s = base.with_snapshot(&doc).compile(doc.version).unwrap();
    assert_eq!(
        (s.version, s.kill_switch, s.routing_header.as_str()),
        (7, true, "x-route")
    );
    assert_eq!(s.rollouts.len(), 1);
    assert_eq!(
        (s.rollouts[0].name.as_str(), s.rollouts[0].weight.get()),
        ("b", 4000)
    );
    // A snapshot is held to the same rules as the plugin configuration, field by field.
    let bad =
        SnapshotDoc::from_json(br#"{"version":8,"rollouts":[{"name":"b","weight":400}]}"#).unwrap();
    let e = base.with_snapshot(&bad).compile(8).unwrap_err().to_string();
    assert!(e.starts_with("rollouts[0].weight"), "{e}");
    for (body, field) in [
        (&br#"{"rollouts":[]}"#[..], "missing field `version`"),
        (br#"{"version":-1}"#, "version"),
        (br#"{"version":1,"sidecar":{}}"#, "unknown field `sidecar`"),
        (b"<html>", "expected value"),
        (b"", "EOF"),
        (
            br#"{"version":1,"epoch":""}"#,
            "epoch: \"\" is not an epoch",
        ),
        (
            br#"{"version":1,"epoch":"a/b"}"#,
            "epoch: \"a/b\" is not an epoch",
        ),
        (br#"{"version":1,"epoch":7}"#, "epoch: invalid type"),
    ] {
        let e = SnapshotDoc::from_json(body).unwrap_err().to_string();
        assert!(e.contains(field), "{e:?} should mention {field:?}");
    }
}

#[test]
fn a_snapshot_doc_names_its_epoch_and_may_omit_it() {
    use linnet_core::{Epoch, SnapshotDoc, Stamp};
    let doc = SnapshotDoc::from_json(br#"{"version":2,"epoch":"run-b"}"#).unwrap();
    let epoch = Epoch::try_from("run-b".to_owned()).unwrap();
    assert_eq!(
        doc.stamp(),
        Stamp {
            epoch: Some(epoch),
            version: 2
        }
    );
    let json = serde_json::to_string(&doc).unwrap();
    assert!(json.contains(r#""epoch":"run-b""#), "{json}");
    // A sidecar from before epochs: the doc reads as before and writes as before.
    let old = SnapshotDoc::from_json(br#"{"version":2}"#).unwrap();
    assert_eq!(old.stamp().epoch, None);
    assert!(!serde_json::to_string(&old).unwrap().contains("epoch"));
}

#[test]
fn a_key_alone_is_decided_as_a_request_carrying_it() {
    let s = snapshot(
        r#"{"rollouts":[
            {"name":"h","weight":50,"stickiness":[{"header":"x-user-id"}],"cohorts":{"canary":["vip"]}},
            {"name":"c","match":{"authority":"c.example"},"weight":50,"stickiness":[{"cookie":"uid"}]}]}"#,
    );
    let by_header = s.rollout("h").unwrap();
    let by_cookie = s.rollout("c").unwrap();
    for key in ["alice", "bob", "carol", "vip"] {
        let leaked: &'static [u8] = Box::leak(key.as_bytes().to_vec().into_boxed_slice());
        let cookie: &'static [u8] =
            Box::leak(format!("a=b; uid={key}").into_bytes().into_boxed_slice());
        assert_eq!(
            by_header.decide_key(false, key.as_bytes()),
            by_header.decide(false, &Req(vec![("x-user-id", leaked)])),
            "{key}"
        );
        assert_eq!(
            by_cookie.decide_key(false, key.as_bytes()),
            by_cookie.decide(false, &Req(vec![("cookie", cookie)])),
            "{key}"
        );
    }
    assert_eq!(by_header.decide_key(false, b"vip").reason, Reason::Cohort);
    // The kill switch comes first, for a key as for any request.
    let d = by_header.decide_key(true, b"vip");
    assert_eq!((d.variant, d.reason), (Variant::Stable, Reason::KillSwitch));
}
