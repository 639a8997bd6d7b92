//! The sidecar's own outbound calls (gates, notifications): one way to reach a webhook URL,
//! and the policy of where it may go.
//!
//! `serve --outbound-loopback-only` keeps every such call on this host (127.0.0.0/8, ::1,
//! `localhost`): for test rigs and fuzzers, which create rollouts and receivers with made-up
//! URLs and must never send traffic anywhere else. A refused call is an answer like any
//! failed one (a gate holds, a notification is retried), never a panic.

use crate::client::Client;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

static LOOPBACK_ONLY: AtomicBool = AtomicBool::new(false);

/// From now on, refuse every outbound call that does not stay on this host.
pub fn restrict_to_loopback() {
    LOOPBACK_ONLY.store(true, Ordering::SeqCst);
}

/// A client for `url`'s origin, and the path (with query) to send to.
pub fn client(url: &str) -> Result<(Client, &str), String> {
    let (base, path) = split_url(url);
    if LOOPBACK_ONLY.load(Ordering::SeqCst) && !is_loopback(base) {
        return Err(format!(
            "{base} is not on this host, and serve --outbound-loopback-only refuses it"
        ));
    }
    Ok((Client::new(base, None)?, path))
}

/// `http://host:port` and `/path?query` of a valid webhook URL.
pub fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, "/"),
    }
}

/// `http://127.x.y.z:…`, `http://[::1]:…`, `http://localhost:…`.
pub fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    match uri.host() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_this_host_only() {
        for url in [
            "http://127.0.0.1:9",
            "http://127.3.2.1",
            "http://[::1]:80",
            "http://LOCALHOST:1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:9",
            "http://example.com",
            "http://0.0.0.0:1",
            "http://[::]:1",
            "nonsense",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn restricted_calls_stay_on_this_host() {
        // Every test of this binary calls loopback only, so turning it on here is harmless.
        restrict_to_loopback();
        let e = client("http://10.1.2.3:9/hook").err().unwrap();
        assert!(e.contains("--outbound-loopback-only"), "{e}");
        assert_eq!(
            client("http://127.0.0.1:9/hook?x=1").unwrap().1,
            "/hook?x=1"
        );
    }

    #[test]
    fn urls_split_into_origin_and_path() {
        assert_eq!(split_url("http://h:1/a/b?c=d"), ("http://h:1", "/a/b?c=d"));
        assert_eq!(split_url("http://h:1"), ("http://h:1", "/"));
    }
}
