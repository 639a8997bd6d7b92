//! `linnet_core::Request` answered from Envoy's request header map, read in one host call.

use crate::abi::{self, Map};
use linnet_core::murmur3::murmur3_x86_32;
use linnet_core::Request;
use std::borrow::Cow;
use std::cell::Cell;

thread_local! {
    /// Distinguishes keys minted in the same nanosecond on the same VM.
    static MINTED: Cell<u64> = const { Cell::new(0) };
}

/// A header map copied out of the host once. Every host call costs a crossing (and a call
/// back into the guest's allocator for its answer), so one copy beats a lookup per header.
/// It is read where it lies: a lookup walks the host's serialization (a handful of headers,
/// compared by length first), which costs less than building an index each request.
#[derive(Default)]
pub struct Headers {
    raw: Vec<u8>,
    /// How many pairs `raw` holds; `parse` checked that they all fit.
    n: usize,
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

/// Header names compared as Envoy stores them (lower case), case-insensitively all the same;
/// the length decides most comparisons by itself.
fn same_name(key: &[u8], name: &[u8]) -> bool {
    key.len() == name.len() && (key == name || key.eq_ignore_ascii_case(name))
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
        let table_end = 4usize.checked_add(n.checked_mul(8)?)?;
        let h = Headers { raw, n };
        let mut data = table_end;
        for i in 0..n {
            let (k, v) = (u32_at(&h.raw, 4 + i * 8)?, u32_at(&h.raw, 8 + i * 8)?);
            data = data.checked_add(k)?.checked_add(v)?.checked_add(2)?;
            if data > h.raw.len() {
                return None;
            }
        }
        Some(h)
    }

    /// Every (name, value) pair, in the host's order.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let table = self.raw.get(4..4 + self.n * 8).unwrap_or_default();
        let mut at = 4 + self.n * 8;
        table.chunks_exact(8).map_while(move |lens| {
            let (k, v) = lens.split_at(4);
            let k = usize::try_from(u32::from_le_bytes(k.try_into().ok()?)).ok()?;
            let v = usize::try_from(u32::from_le_bytes(v.try_into().ok()?)).ok()?;
            let key = self.raw.get(at..at + k)?;
            let value = self.raw.get(at + k + 1..at + k + 1 + v)?;
            at += k + v + 2;
            Some((key, value))
        })
    }

    /// Which of `names` the map holds, in one walk over it.
    pub fn has_each<const N: usize>(&self, names: [&str; N]) -> [bool; N] {
        let mut found = [false; N];
        for (key, _) in self.pairs() {
            for (name, f) in names.iter().zip(found.iter_mut()) {
                *f |= same_name(key, name.as_bytes());
            }
        }
        found
    }

    /// The first value of a header (Envoy keeps names lower-case; compared without case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.pairs()
            .find(|(k, _)| same_name(k, name))
            .map(|(_, v)| v)
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
