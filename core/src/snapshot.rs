//! The compiled, immutable form of a configuration: what the request path reads.

use crate::decide::Variant;
use crate::murmur3::Murmur3;
use crate::weight::Bp;
use rustc_hash::FxHashMap;

/// Everything the filter needs to route, built once and shared by every request.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Increases with every change the sidecar makes; 0 for the plugin's own configuration.
    pub version: u64,
    pub kill_switch: bool,
    pub routing_header: String,
    pub mirror_header: String,
    /// Write the routing header for stable decisions too (see `PluginConfig::mark_stable`).
    pub mark_stable: bool,
    pub rollouts: Vec<Rollout>,
}

#[derive(Debug, Clone)]
pub struct Rollout {
    pub name: String,
    pub matcher: Matcher,
    pub weight: Bp,
    pub salt: Box<[u8]>,
    /// The hash state after `salt ":"`, so a request hashes only its key.
    pub(crate) bucket_prefix: Murmur3,
    /// Key sources in order; the first one present and non-empty is the user's key.
    pub stickiness: Vec<Source>,
    pub anonymous: Anonymous,
    pub cohorts: Cohorts,
    pub override_: Option<Override>,
    pub kill_switch: bool,
    pub mirror: Option<Mirror>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A lower-case header name.
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anonymous {
    Stable,
    Random { cookie: String, max_age_s: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub header: String,
    pub token_header: String,
    pub token: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub cluster: String,
    pub bp: Bp,
    /// The hash state after `salt ":mirror:"`, so a request hashes only its request id.
    pub(crate) sample_prefix: Murmur3,
}

/// Exact-match key lists, held as one map so a key costs one lookup. A key may not be on both.
#[derive(Debug, Clone, Default)]
pub struct Cohorts {
    members: FxHashMap<Box<[u8]>, Variant>,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    authority: Option<Authority>,
    path_prefix: Option<Box<[u8]>>,
}

#[derive(Debug, Clone)]
enum Authority {
    /// Lower-case host, no port.
    Exact(Box<[u8]>),
    /// `*.example.com` keeps `.example.com`: any non-empty label in front matches.
    Suffix(Box<[u8]>),
}

// === impl Snapshot ===

impl Snapshot {
    /// The rollout whose match accepts this request, with its index, if any. `rollouts` is in
    /// precedence order (see [`Matcher::specificity`]), so the first match is the most specific.
    pub fn find(&self, authority: &[u8], path: &[u8]) -> Option<(usize, &Rollout)> {
        let host = host_of(authority);
        self.rollouts
            .iter()
            .enumerate()
            .find(|(_, r)| r.matcher.matches_host(host, path))
    }

    pub fn rollout(&self, name: &str) -> Option<&Rollout> {
        self.rollouts.iter().find(|r| r.name == name)
    }

    /// Whether the filter writes the routing header for `variant`. The canary always: the route
    /// config sends it there by the header. Stable only with `mark_stable`: everything without
    /// `canary` goes to stable anyway, so an untouched request needs no second route match.
    pub fn marks(&self, variant: Variant) -> bool {
        variant == Variant::Canary || self.mark_stable
    }

    /// The headers Linnet itself writes on a request: the variant and the mirror target. A
    /// client's copies are stripped from every request, and no rollout may read them.
    pub fn linnet_headers(&self) -> [&str; 2] {
        [&self.routing_header, &self.mirror_header]
    }
}

// === impl Rollout ===

impl Rollout {
    /// Whether this rollout reads `header` as a key, override or token source.
    pub(crate) fn reads_header(&self, header: &str) -> bool {
        self.stickiness
            .iter()
            .any(|s| matches!(s, Source::Header(h) if h == header))
            || self
                .override_
                .as_ref()
                .is_some_and(|o| o.headers().contains(&header))
    }
}

// === impl Override ===

impl Override {
    /// The headers a client sends to pick its variant: for Linnet, stripped before the
    /// request goes upstream.
    pub fn headers(&self) -> [&str; 2] {
        [&self.header, &self.token_header]
    }
}

// === impl Cohorts ===

impl Cohorts {
    /// Builds the lists; `Err` carries a key found on both.
    pub fn new(canary: &[String], stable: &[String]) -> Result<Self, String> {
        let mut members = FxHashMap::default();
        for k in canary {
            members.insert(k.as_bytes().into(), Variant::Canary);
        }
        for k in stable {
            if members.insert(k.as_bytes().into(), Variant::Stable) == Some(Variant::Canary) {
                return Err(k.clone());
            }
        }
        Ok(Self { members })
    }

    /// The variant a key is pinned to, if it is on a list.
    pub fn get(&self, key: &[u8]) -> Option<Variant> {
        if self.members.is_empty() {
            return None;
        }
        self.members.get(key).copied()
    }

    /// Number of keys on the lists.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

// === impl Matcher ===

impl Matcher {
    /// `Err((field, message))` for a pattern that can never match as written.
    pub fn new(
        authority: Option<&str>,
        path_prefix: Option<&str>,
    ) -> Result<Self, (&'static str, String)> {
        let authority = match authority {
            None | Some("*") => None,
            Some(a) => {
                let lower = a.to_ascii_lowercase();
                if lower.is_empty() || lower.bytes().any(|b| b.is_ascii_whitespace() || b == b'/') {
                    return Err(("authority", format!("{a:?} is not a host name")));
                }
                if let Some(suffix) = lower.strip_prefix('*') {
                    if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                        return Err((
                            "authority",
                            format!("{a:?}: a wildcard must be a leading '*.' label"),
                        ));
                    }
                    Some(Authority::Suffix(suffix.as_bytes().into()))
                } else if lower.contains('*') {
                    return Err((
                        "authority",
                        format!("{a:?}: a wildcard must be a leading '*.' label"),
                    ));
                } else {
                    Some(Authority::Exact(lower.as_bytes().into()))
                }
            }
        };
        let path_prefix = match path_prefix {
            None => None,
            Some(p) if p.starts_with('/') => Some(p.as_bytes().into()),
            Some(p) => return Err(("path_prefix", format!("{p:?} must start with '/'"))),
        };
        Ok(Self {
            authority,
            path_prefix,
        })
    }

    /// How specific the match is; a larger key wins when several rollouts accept a request:
    /// an exact host over a wildcard (a longer wildcard suffix first) over any host, then a
    /// longer path prefix. Never the name or the order they were written in.
    pub fn specificity(&self) -> (u8, usize, usize) {
        let (rank, host_len) = match &self.authority {
            Some(Authority::Exact(h)) => (2, h.len()),
            Some(Authority::Suffix(s)) => (1, s.len()),
            None => (0, 0),
        };
        (
            rank,
            host_len,
            self.path_prefix.as_ref().map_or(0, |p| p.len()),
        )
    }

    /// Whether some request is accepted by both matches: the hosts can be the same and one
    /// path prefix starts with the other.
    pub fn overlaps(&self, other: &Matcher) -> bool {
        let hosts = match (&self.authority, &other.authority) {
            (None, _) | (_, None) => true,
            (Some(Authority::Exact(a)), Some(Authority::Exact(b))) => a == b,
            (Some(Authority::Exact(h)), Some(Authority::Suffix(s)))
            | (Some(Authority::Suffix(s)), Some(Authority::Exact(h))) => {
                h.len() > s.len() && h.ends_with(s)
            }
            // `*.a.example` and `*.example` share every host under `.a.example`.
            (Some(Authority::Suffix(a)), Some(Authority::Suffix(b))) => {
                a.ends_with(b) || b.ends_with(a)
            }
        };
        let paths = match (&self.path_prefix, &other.path_prefix) {
            (Some(a), Some(b)) => a.starts_with(b) || b.starts_with(a),
            _ => true,
        };
        hosts && paths
    }

    /// `matches_host` from a whole authority; the request path goes through `Snapshot::find`.
    #[cfg(test)]
    fn matches(&self, authority: &[u8], path: &[u8]) -> bool {
        self.matches_host(host_of(authority), path)
    }

    /// `matches` for a host already taken out of its authority, so that a request is parsed
    /// once however many rollouts it is tried against.
    fn matches_host(&self, host: &[u8], path: &[u8]) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !path.starts_with(prefix) {
                return false;
            }
        }
        match &self.authority {
            None => true,
            Some(Authority::Exact(h)) => same_host(host, h),
            Some(Authority::Suffix(s)) => {
                host.len() > s.len() && same_host(&host[host.len() - s.len()..], s)
            }
        }
    }
}

/// `host` equals the lower-case `pattern`, ignoring ASCII case. Clients nearly always send
/// lower case, so the exact comparison (a vectorised memcmp) decides most requests by itself.
fn same_host(host: &[u8], pattern: &[u8]) -> bool {
    host.len() == pattern.len() && (host == pattern || host.eq_ignore_ascii_case(pattern))
}

/// The host of an authority: no port, no trailing dot (`Example.com.:80` → `Example.com`).
fn host_of(authority: &[u8]) -> &[u8] {
    let host = strip_port(authority);
    host.strip_suffix(b".").unwrap_or(host)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    // One pass from the end: digits, then the colon that makes them a port.
    let digits = authority
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    match authority.len().checked_sub(digits + 1) {
        Some(colon) if authority[colon] == b':' => &authority[..colon],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_matching() {
        let m = Matcher::new(Some("Shop.Example"), Some("/api")).unwrap();
        assert!(m.matches(b"shop.example", b"/api/cart"));
        assert!(m.matches(b"SHOP.example:10000", b"/api"));
        assert!(m.matches(b"shop.example.:10000", b"/api"));
        assert!(!m.matches(b"shop.example", b"/web"));
        assert!(!m.matches(b"other.example", b"/api"));
        let w = Matcher::new(Some("*.example"), None).unwrap();
        assert!(w.matches(b"a.example", b"/"));
        assert!(w.matches(b"a.b.example:1", b"/"));
        assert!(!w.matches(b".example", b"/"));
        assert!(!w.matches(b"example", b"/"));
        let any = Matcher::new(None, None).unwrap();
        assert!(any.matches(b"", b""));
        assert!(Matcher::new(Some("a*.b"), None).is_err());
        assert!(Matcher::new(Some("*"), None).unwrap().matches(b"x", b"/"));
        assert!(Matcher::new(None, Some("api")).is_err());
        assert_eq!(strip_port(b"[::1]:10000"), b"[::1]");
        assert_eq!(strip_port(b"host:abc"), b"host:abc");
        assert_eq!(strip_port(b"host:"), b"host");
        assert_eq!(strip_port(b"a:1:2"), b"a:1");
        assert_eq!(strip_port(b"10000"), b"10000");
        assert_eq!(strip_port(b":80"), b"");
        assert_eq!(strip_port(b"[::1"), b"[::1");
    }

    fn m(authority: Option<&str>, path: Option<&str>) -> Matcher {
        Matcher::new(authority, path).unwrap()
    }

    #[test]
    fn overlapping_matches() {
        let host = m(Some("checkout.local"), None);
        let api = m(Some("Checkout.Local"), Some("/api"));
        let web = m(Some("checkout.local"), Some("/web"));
        let wild = m(Some("*.local"), None);
        let deeper = m(Some("*.a.local"), None);
        let other = m(Some("cart.example"), None);
        let any = m(None, None);
        for (a, b) in [
            (&host, &api),
            (&api, &api),
            (&host, &wild),
            (&wild, &deeper),
            (&any, &other),
            (&any, &api),
        ] {
            assert!(a.overlaps(b) && b.overlaps(a), "{a:?} {b:?}");
        }
        for (a, b) in [(&api, &web), (&host, &other), (&wild, &other)] {
            assert!(!a.overlaps(b) && !b.overlaps(a), "{a:?} {b:?}");
        }
        // `*.local` never matches `local` itself.
        assert!(!wild.overlaps(&m(Some("local"), None)));
        assert!(!deeper.overlaps(&m(Some("b.local"), None)));
    }

    #[test]
    fn specificity_orders_exact_wildcard_any_then_path() {
        let mut all = [
            m(None, Some("/")),
            m(Some("*.local"), None),
            m(Some("checkout.local"), Some("/api/v2")),
            m(None, None),
            m(Some("*.shop.local"), None),
            m(Some("checkout.local"), None),
        ];
        all.sort_by_key(|x| std::cmp::Reverse(x.specificity()));
        let order: Vec<_> = all.iter().map(Matcher::specificity).collect();
        assert_eq!(
            order,
            [
                (2, 14, 7),
                (2, 14, 0),
                (1, 11, 0),
                (1, 6, 0),
                (0, 0, 1),
                (0, 0, 0)
            ]
        );
    }
}
