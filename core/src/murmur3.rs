//! MurmurHash3 x86_32, streamed over several byte slices so that `salt ":" key` is hashed
//! without ever being concatenated into a new buffer.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Inputs up to this size are joined on the stack and hashed in one tight loop.
const STACK: usize = 128;

/// Hashes the concatenation of `parts` with MurmurHash3 x86_32 and the given seed.
///
/// The result is identical to hashing one buffer holding all parts back to back.
pub fn murmur3_x86_32(parts: &[&[u8]], seed: u32) -> u32 {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total <= STACK {
        // Typical keys are short: copying them is cheaper than stitching blocks across parts.
        let mut buf = [0u8; STACK];
        let mut at = 0;
        for part in parts {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        return murmur3_contiguous(&buf[..at], seed);
    }
    murmur3_streamed(parts, seed)
}

fn murmur3_contiguous(bytes: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut blocks = bytes.chunks_exact(4);
    for b in &mut blocks {
        h = mix_block(h, u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut k: u32 = 0;
        for (i, b) in tail.iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        h ^= scramble(k);
    }
    // The reference implementation folds the length in as a 32-bit value.
    fmix32(h ^ bytes.len() as u32)
}

/// The same hash without joining the parts, for inputs too long for the stack buffer.
fn murmur3_streamed(parts: &[&[u8]], seed: u32) -> u32 {
    let mut h = seed;
    let mut total: usize = 0;
    // Bytes left over from a previous part that did not fill a 4-byte block.
    let mut pending = [0u8; 4];
    let mut npending = 0usize;

    for part in parts {
        total = total.wrapping_add(part.len());
        let mut rest: &[u8] = part;
        if npending > 0 {
            let take = (4 - npending).min(rest.len());
            pending[npending..npending + take].copy_from_slice(&rest[..take]);
            npending += take;
            rest = &rest[take..];
            if npending < 4 {
                continue;
            }
            h = mix_block(h, u32::from_le_bytes(pending));
        }
        let mut chunks = rest.chunks_exact(4);
        for block in &mut chunks {
            let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            h = mix_block(h, k);
        }
        let tail = chunks.remainder();
        pending[..tail.len()].copy_from_slice(tail);
        npending = tail.len();
    }

    if npending > 0 {
        let mut k: u32 = 0;
        for (i, b) in pending[..npending].iter().enumerate() {
            k |= u32::from(*b) << (8 * i);
        }
        h ^= scramble(k);
    }

    // The reference implementation folds the length in as a 32-bit value.
    h ^= total as u32;
    fmix32(h)
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
    use super::murmur3_x86_32;
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
    fn long_inputs_take_the_streamed_path_and_agree() {
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
