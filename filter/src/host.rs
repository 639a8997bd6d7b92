//! `linnet_core::Request` answered from Envoy's request header map, read in one host call.

use crate::abi::{self, Map};
use linnet_core::murmur3::murmur3_x86_32;
use linnet_core::Request;
use std::borrow::Cow;
use std::cell::Cell;
use std::ops::Range;

thread_local! {
    /// Distinguishes keys minted in the same nanosecond on the same VM.
    static MINTED: Cell<u64> = const { Cell::new(0) };
}

/// A header map copied out of the host once. Every host call costs a crossing (and a call
/// back into the guest's allocator for its answer), so one copy beats a lookup per header.
#[derive(Default)]
pub struct Headers {
    raw: Vec<u8>,
    pairs: Vec<(Range<usize>, Range<usize>)>,
}

/// Nanoseconds since the epoch by the host's clock, 0 if the host cannot say.
pub fn now_ns() -> u64 {
    abi::now_ns().unwrap_or(0)
}

/// A header map in the ABI's serialization (see `Headers::parse`), for the host to read.
pub fn serialize_map<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    // Lengths fit a u32 on wasm32, where usize is one.
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = len(pairs.len()).to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&len(k.as_ref().len()));
        out.extend_from_slice(&len(v.as_ref().len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

// === impl Headers ===

impl Headers {
    /// The request headers; empty if the host has none or sends a map that does not parse.
    pub fn request() -> Headers {
        let raw = abi::header_pairs(Map::Request)
            .ok()
            .flatten()
            .unwrap_or_default();
        Self::parse(raw).unwrap_or_default()
    }

    /// The ABI's serialization: a u32 count, then a (u32 key length, u32 value length) per
    /// pair, then each key and each value followed by a NUL byte. All little-endian.
    fn parse(raw: Vec<u8>) -> Option<Headers> {
        let n = u32_at(&raw, 0)?;
        let mut pairs = Vec::with_capacity(n.min(raw.len() / 8));
        let mut at = 4usize.checked_add(n.checked_mul(8)?)?;
        for i in 0..n {
            let (k, v) = (u32_at(&raw, 4 + i * 8)?, u32_at(&raw, 8 + i * 8)?);
            let key = at..at.checked_add(k)?;
            let value = key.end.checked_add(1)?..key.end.checked_add(1 + v)?;
            at = value.end.checked_add(1)?;
            if at > raw.len() {
                return None;
            }
            pairs.push((key, value));
        }
        Some(Headers { raw, pairs })
    }

    /// The first value of a header (Envoy keeps names lower-case; compared without case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| self.raw[k.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }
}

impl Request for Headers {
    fn header(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        self.get(name).map(Cow::Borrowed)
    }

    /// wasm32-unknown-unknown has no OS randomness; Envoy gives every request a random
    /// x-request-id (UUIDv4), which is mixed with the clock and a per-VM counter. Asked only
    /// when a key is minted, so only then does the request read the clock.
    fn entropy(&self) -> [u8; 16] {
        let n = MINTED.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        let id = self
            .get(linnet_core::decide::REQUEST_ID_HEADER)
            .unwrap_or_default();
        let (t, n) = (now_ns().to_le_bytes(), n.to_le_bytes());
        let mut out = [0u8; 16];
        for (seed, chunk) in (0u32..).zip(out.chunks_exact_mut(4)) {
            let h = murmur3_x86_32(&[&t, &n, id], 0x9e37_79b9_u32.wrapping_mul(seed + 1));
            chunk.copy_from_slice(&h.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{serialize_map, Headers};

    #[test]
    fn parses_the_abi_serialization() {
        let pairs: [(&[u8], &[u8]); 4] = [
            (b":path", b"/"),
            (b"x-user-id", b"\xff\x00u"),
            (b"x-user-id", b"second"),
            (b"empty", b""),
        ];
        let raw = serialize_map(&pairs);
        let h = Headers::parse(raw).unwrap();
        assert_eq!(h.get(":path"), Some(&b"/"[..]));
        assert_eq!(h.get("X-User-Id"), Some(&b"\xff\x00u"[..]));
        assert_eq!(h.get("empty"), Some(&b""[..]));
        assert_eq!(h.get("missing"), None);
    }

    #[test]
    fn refuses_truncated_or_lying_maps() {
        let raw = serialize_map(&[("a", "b")]);
        for cut in 0..raw.len() {
            assert!(
                Headers::parse(raw[..cut].to_vec()).is_none(),
                "cut at {cut}"
            );
        }
        let mut huge = raw.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::parse(huge).is_none());
        let mut long = raw;
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::parse(long).is_none());
        assert_eq!(
            Headers::parse(serialize_map::<&str, &str>(&[]))
                .unwrap()
                .get("a"),
            None
        );
    }
}
