//! MurmurHash3 x86_32 as a streaming state, so that `salt ":" key` is hashed without being
//! joined into a new buffer, and a rollout hashes its fixed `salt ":"` once, not per request.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Hashes the concatenation of `parts` with MurmurHash3 x86_32 and the given seed.
///
/// The result is identical to hashing one buffer holding all parts back to back.
pub fn murmur3_x86_32(parts: &[&[u8]], seed: u32) -> u32 {
    Murmur3::after(seed, parts).finish()
}

/// The hash of the bytes written so far. `Copy`, so a state that has consumed a fixed prefix
/// can be kept and copied for every key that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Murmur3 {
    h: u32,
    /// Bytes written after the last whole 4-byte block, little-endian in the low bits.
    carry: u32,
    /// How many bytes `carry` holds, 0..=3.
    carried: u32,
    /// Bytes written in all. The reference implementation folds the length in as 32 bits.
    len: u32,
}

// === impl Murmur3 ===

impl Murmur3 {
    pub const fn new(seed: u32) -> Self {
        Murmur3 {
            h: seed,
            carry: 0,
            carried: 0,
            len: 0,
        }
    }

    /// The state after writing each of `parts` in turn.
    pub fn after(seed: u32, parts: &[&[u8]]) -> Self {
        let mut state = Murmur3::new(seed);
        for part in parts {
            state.write(part);
        }
        state
    }

    /// Appends `bytes`. Blocks are read straight from `bytes`; only a block that straddles two
    /// writes is assembled, a byte at a time (at most three).
    pub fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u32);
        if self.carried > 0 {
            while self.carried < 4 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return;
                };
                self.carry |= u32::from(b) << (8 * self.carried);
                self.carried += 1;
                bytes = rest;
            }
            self.h = mix_block(self.h, self.carry);
            self.carry = 0;
            self.carried = 0;
        }
        let mut blocks = bytes.chunks_exact(4);
        for b in &mut blocks {
            self.h = mix_block(self.h, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        for &b in blocks.remainder() {
            self.carry |= u32::from(b) << (8 * self.carried);
            self.carried += 1;
        }
    }

    pub fn finish(self) -> u32 {
        let mut h = self.h;
        if self.carried > 0 {
            h ^= scramble(self.carry);
        }
        fmix32(h ^ self.len)
    }

    /// The hash of everything written so far followed by `bytes`, leaving `self` as it is.
    pub fn finish_with(mut self, bytes: &[u8]) -> u32 {
        self.write(bytes);
        self.finish()
    }
}

#[inline]
fn scramble(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline]
fn mix_block(h: u32, k: u32) -> u32 {
    (h ^ scramble(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::{murmur3_x86_32, Murmur3};
    use proptest::prelude::*;

    fn reference(bytes: &[u8], seed: u32) -> u32 {
        murmur3::murmur3_32(&mut std::io::Cursor::new(bytes), seed).unwrap()
    }

    #[test]
    fn published_vectors() {
        // Widely published MurmurHash3_x86_32 vectors.
        assert_eq!(murmur3_x86_32(&[b""], 0), 0);
        assert_eq!(murmur3_x86_32(&[b""], 1), 0x514e_28b7);
        assert_eq!(murmur3_x86_32(&[b""], 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_x86_32(&[b"\0\0\0\0"], 0), 0x2362_f9de);
        assert_eq!(murmur3_x86_32(&[b"Hello, world!"], 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_x86_32(&[b"The quick brown fox jumps over the lazy dog"], 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn matches_independent_implementation_on_rollout_keys() {
        for (salt, key) in [
            ("checkout", "user-1"),
            ("checkout", ""),
            ("", "a"),
            ("search-v2", "4f1c2d0e-9b1a-4a7e-8c55-0c7a3f1e9d21"),
        ] {
            let joined = format!("{salt}:{key}");
            assert_eq!(
                murmur3_x86_32(&[salt.as_bytes(), b":", key.as_bytes()], 0),
                reference(joined.as_bytes(), 0),
                "{joined}"
            );
        }
    }

    #[test]
    fn a_kept_prefix_state_hashes_like_the_whole_input() {
        // Prefix lengths 0..=8 put the key at every offset within a block.
        for salt in ["", "a", "ab", "abc", "abcd", "checkout", "search-v2"] {
            let mut prefix = Murmur3::new(0);
            prefix.write(salt.as_bytes());
            prefix.write(b":");
            for key in [
                "",
                "u",
                "user-48213",
                "4f1c2d0e-9b1a-4a7e-8c55-0c7a3f1e9d21",
            ] {
                let joined = format!("{salt}:{key}");
                assert_eq!(
                    prefix.finish_with(key.as_bytes()),
                    reference(joined.as_bytes(), 0),
                    "{joined}"
                );
            }
        }
    }

    #[test]
    fn long_inputs_split_anywhere_agree() {
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 3, 128, 129, 500, 999, 1000] {
            let (a, b) = long.split_at(cut);
            assert_eq!(
                murmur3_x86_32(&[a, b"", b], 42),
                reference(&long, 42),
                "cut {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn split_anywhere_equals_reference(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cut1 in 0usize..300,
            cut2 in 0usize..300,
            seed in any::<u32>(),
        ) {
            let a = cut1.min(bytes.len());
            let b = cut2.min(bytes.len()).max(a);
            let parts = [&bytes[..a], &bytes[a..b], &bytes[b..]];
            prop_assert_eq!(murmur3_x86_32(&parts, seed), reference(&bytes, seed));
        }
    }
}
