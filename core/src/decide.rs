//! The per-request decision: kill switch > override > cohort > sticky bucket.

use crate::murmur3::Murmur3;
use crate::snapshot::{Anonymous, Rollout, Snapshot, Source};
use crate::weight::FULL;
use std::borrow::Cow;

/// What the decision needs from a request. The filter answers from Envoy's header map; tests
/// and the CLI answer from plain maps.
pub trait Request {
    /// The value of a request header (lower-case name), raw bytes, first value only.
    /// Borrowed where the caller already holds the headers, so a lookup costs no allocation.
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>>;
    /// 16 unpredictable bytes, used to mint keys for anonymous users and to sample mirroring
    /// when a request has no `x-request-id`. Called only when needed.
    fn entropy(&self) -> [u8; 16];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Stable,
    Canary,
}

/// Why a request got its variant. Kept with every decision and counted by the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    KillSwitch,
    Override,
    Cohort,
    Bucket,
    /// No key and the anonymous policy is `stable`.
    Anonymous,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub variant: Variant,
    pub reason: Reason,
    /// The user's bucket, when one was computed.
    pub bucket: Option<u16>,
    /// A key minted for an anonymous user, to be set as this cookie on the response.
    pub mint: Option<MintedCookie>,
    /// The shadow cluster to copy this request to, when it is sampled for mirroring.
    pub mirror: Option<String>,
    /// An override header was sent but not honoured (unknown value or wrong token).
    pub override_rejected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedCookie {
    pub name: String,
    pub key: String,
    pub max_age_s: u64,
}

// === impl MintedCookie ===

impl MintedCookie {
    /// The `set-cookie` header value that hands the key to the client.
    pub fn header_value(&self) -> String {
        format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            self.name, self.key, self.max_age_s
        )
    }
}

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The stream property the filter puts a minted cookie in. Envoy keeps it as filter state
/// `wasm.linnet_cookie`, and the route writes it on the response (see [`SET_COOKIE_VALUE`]):
/// the filter needs no response callback for it.
pub const COOKIE_PROPERTY: &str = "linnet_cookie";

/// The `set-cookie` value a route carrying Linnet adds to its responses
/// (`response_headers_to_add`, with `keep_empty_value: false`, so that a response with no
/// minted cookie gets no header).
pub const SET_COOKIE_VALUE: &str = "%FILTER_STATE(wasm.linnet_cookie:PLAIN)%";

// === impl Variant ===

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Stable, Variant::Canary];

    pub const fn as_str(self) -> &'static str {
        match self {
            Variant::Stable => "stable",
            Variant::Canary => "canary",
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<Variant> {
        match bytes {
            b"stable" => Some(Variant::Stable),
            b"canary" => Some(Variant::Canary),
            _ => None,
        }
    }
}

// === impl Reason ===

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::KillSwitch,
        Reason::Override,
        Reason::Cohort,
        Reason::Bucket,
        Reason::Anonymous,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::KillSwitch => "kill_switch",
            Reason::Override => "override",
            Reason::Cohort => "cohort",
            Reason::Bucket => "bucket",
            Reason::Anonymous => "anonymous",
        }
    }
}

/// `murmur3_x86_32(utf8(salt + ":" + key), seed 0) % 10000`.
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    bucket_after(bucket_prefix(salt), key)
}

/// The hash state after `salt ":"`, which every key of a rollout starts from.
pub(crate) fn bucket_prefix(salt: &[u8]) -> Murmur3 {
    Murmur3::after(0, &[salt, b":"])
}

/// The hash state after `salt ":mirror:"`, which mirror sampling starts from.
pub(crate) fn sample_prefix(salt: &[u8]) -> Murmur3 {
    Murmur3::after(0, &[salt, b":mirror:"])
}

/// The bucket of `bytes` hashed after `prefix`: 0..10,000.
fn bucket_after(prefix: Murmur3, bytes: &[u8]) -> u16 {
    // The remainder is below 10,000, so it fits.
    (prefix.finish_with(bytes) % u32::from(FULL)) as u16
}

/// The value of cookie `name` in a `Cookie` header. Tolerates junk: pieces without `=`, stray
/// spaces, quoted values, non-UTF-8 bytes. An empty value counts as absent.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header
        .split(|&b| b == b';')
        .filter_map(|piece| {
            let piece = trim(piece);
            let eq = piece.iter().position(|&b| b == b'=')?;
            Some((trim(&piece[..eq]), trim(&piece[eq + 1..])))
        })
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| match v {
            [b'"', inner @ .., b'"'] => inner,
            v => v,
        })
        .filter(|v| !v.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Compares without stopping at the first difference; only the length leaks. The filter
/// checks override tokens with it, the sidecar its API tokens.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

// === impl Rollout ===

impl Rollout {
    /// The user's sticky key: the first source present with a non-empty value.
    pub fn key<'r, R: Request + ?Sized>(&self, req: &'r R) -> Option<Cow<'r, [u8]>> {
        let mut cookies: Option<Option<Cow<'r, [u8]>>> = None;
        for source in &self.stickiness {
            match source {
                Source::Header(h) => {
                    if let Some(v) = req.header(h).filter(|v| !v.is_empty()) {
                        return Some(v);
                    }
                }
                Source::Cookie(c) => {
                    let header = cookies.get_or_insert_with(|| req.header("cookie"));
                    match header {
                        Some(Cow::Borrowed(h)) => {
                            if let Some(v) = cookie(h, c) {
                                return Some(Cow::Borrowed(v));
                            }
                        }
                        Some(Cow::Owned(h)) => {
                            if let Some(v) = cookie(h, c) {
                                return Some(Cow::Owned(v.to_vec()));
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        None
    }

    /// The variant for a user key, ignoring overrides and the kill switch.
    pub fn variant_for_key(&self, key: &[u8]) -> (Variant, Reason, Option<u16>) {
        if let Some(v) = self.cohorts.get(key) {
            return (v, Reason::Cohort, None);
        }
        let b = bucket_after(self.bucket_prefix, key);
        let v = if b < self.weight.get() {
            Variant::Canary
        } else {
            Variant::Stable
        };
        (v, Reason::Bucket, Some(b))
    }

    /// The override, if one is configured and sent: honoured when the header names a variant
    /// and, if a token is set, the token header carries it exactly; rejected otherwise.
    fn overridden<R: Request + ?Sized>(&self, req: &R) -> Option<Result<Variant, ()>> {
        let o = self.override_.as_ref()?;
        let sent = req.header(&o.header)?;
        let Some(variant) = Variant::parse(&sent) else {
            return Some(Err(()));
        };
        if let Some(token) = &o.token {
            let ok = req
                .header(&o.token_header)
                .is_some_and(|t| constant_time_eq(&t, token));
            if !ok {
                return Some(Err(()));
            }
        }
        Some(Ok(variant))
    }

    /// Decides the variant for one request. `global_kill` is the snapshot's kill switch.
    pub fn decide<R: Request + ?Sized>(&self, global_kill: bool, req: &R) -> Decision {
        if global_kill || self.kill_switch {
            return Decision {
                variant: Variant::Stable,
                reason: Reason::KillSwitch,
                bucket: None,
                mint: None,
                mirror: None,
                override_rejected: false,
            };
        }
        let overridden = self.overridden(req);
        let override_rejected = matches!(overridden, Some(Err(())));
        let (variant, reason, bucket, mint) = if let Some(Ok(v)) = overridden {
            (v, Reason::Override, None, None)
        } else if let Some(key) = self.key(req) {
            let (v, r, b) = self.variant_for_key(&key);
            (v, r, b, None)
        } else {
            match &self.anonymous {
                Anonymous::Stable => (Variant::Stable, Reason::Anonymous, None, None),
                Anonymous::Random { cookie, max_age_s } => {
                    let key = hex(&req.entropy());
                    let (v, r, b) = self.variant_for_key(key.as_bytes());
                    let mint = MintedCookie {
                        name: cookie.clone(),
                        key,
                        max_age_s: *max_age_s,
                    };
                    (v, r, b, Some(mint))
                }
            }
        };
        let mirror = if variant == Variant::Stable {
            self.mirror_target(req)
        } else {
            None
        };
        Decision {
            variant,
            reason,
            bucket,
            mint,
            mirror,
            override_rejected,
        }
    }

    /// Samples `mirror.percent` of requests by hashing their `x-request-id`.
    fn mirror_target<R: Request + ?Sized>(&self, req: &R) -> Option<String> {
        let m = self.mirror.as_ref()?;
        if m.bp.get() == 0 {
            return None;
        }
        let id = req.header(REQUEST_ID_HEADER).filter(|v| !v.is_empty());
        let entropy;
        let id: &[u8] = match &id {
            Some(id) => id,
            None => {
                entropy = req.entropy();
                &entropy
            }
        };
        let sample = bucket_after(m.sample_prefix, id);
        (sample < m.bp.get()).then(|| m.cluster.clone())
    }

    /// The decision for a request that carries only `key`, in this rollout's first key
    /// source: what `linnet whereis` shows, by the path every request takes.
    pub fn decide_key(&self, global_kill: bool, key: &[u8]) -> Decision {
        self.decide(
            global_kill,
            &KeyOnly {
                source: self.stickiness.first(),
                key,
            },
        )
    }
}

/// A request with nothing but a user's key in it.
struct KeyOnly<'a> {
    source: Option<&'a Source>,
    key: &'a [u8],
}

impl Request for KeyOnly<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        match self.source? {
            Source::Header(h) if h == name => Some(Cow::Borrowed(self.key)),
            Source::Cookie(c) if name == "cookie" => {
                Some(Cow::Owned([c.as_bytes(), b"=", self.key].concat()))
            }
            _ => None,
        }
    }

    fn entropy(&self) -> [u8; 16] {
        [0; 16]
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Finds the rollout for this request and decides, as the filter does for every request;
    /// the index is the rollout's position. `stale`: the snapshot is stale and `on_stale:
    /// stable` asks for all traffic on stable, which routes like the kill switch.
    /// `None`: no rollout matches.
    pub fn decide<R: Request + ?Sized>(
        &self,
        stale: bool,
        authority: &[u8],
        path: &[u8],
        req: &R,
    ) -> Option<(usize, &Rollout, Decision)> {
        let (i, rollout) = self.find(authority, path)?;
        Some((i, rollout, rollout.decide(self.kill_switch || stale, req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie(b"a=1; uid=abc; b=2", "uid"), Some(&b"abc"[..]));
        assert_eq!(cookie(b"uid=\"q\"", "uid"), Some(&b"q"[..]));
        assert_eq!(cookie(b"uid=", "uid"), None);
        assert_eq!(cookie(b";;;=;uid;==;", "uid"), None);
        assert_eq!(cookie(b"  uid = x y ;", "uid"), Some(&b"x y"[..]));
        assert_eq!(
            cookie(b"xuid=1; uid=\xff\xfe", "uid"),
            Some(&b"\xff\xfe"[..])
        );
        assert_eq!(cookie(b"uid=1; uid=2", "uid"), Some(&b"1"[..]));
        assert_eq!(cookie(b"", "uid"), None);
        assert_eq!(cookie(b"\"", "uid"), None);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn hex_is_lowercase_32_chars() {
        let h = hex(&[0xab; 16]);
        assert_eq!(h.len(), 32);
        assert!(h.chars().all(|c| c == 'a' || c == 'b'));
    }
}
