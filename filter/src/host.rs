//! `linnet_core::Request` answered from Envoy's request header map.

use crate::abi::{self, Map};
use linnet_core::murmur3::murmur3_x86_32;
use linnet_core::Request;
use std::cell::Cell;

thread_local! {
    /// Distinguishes keys minted in the same nanosecond on the same VM.
    static MINTED: Cell<u64> = const { Cell::new(0) };
}

/// Raw bytes of a request header; a host error reads as absent.
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    abi::header(Map::Request, name).ok().flatten()
}

pub fn response_header(name: &str) -> Option<Vec<u8>> {
    abi::header(Map::Response, name).ok().flatten()
}

/// Nanoseconds since the epoch by the host's clock, 0 if the host cannot say.
pub fn now_ns() -> u64 {
    abi::now_ns().unwrap_or(0)
}

pub struct EnvoyRequest {
    pub now_ns: u64,
}

impl Request for EnvoyRequest {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        request_header(name)
    }

    /// wasm32-unknown-unknown has no OS randomness; Envoy gives every request a random
    /// x-request-id (UUIDv4), which is mixed with the clock and a per-VM counter.
    fn entropy(&self) -> [u8; 16] {
        let n = MINTED.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        let id = request_header(linnet_core::decide::REQUEST_ID_HEADER).unwrap_or_default();
        let (t, n) = (self.now_ns.to_le_bytes(), n.to_le_bytes());
        let mut out = [0u8; 16];
        for (seed, chunk) in (0u32..).zip(out.chunks_exact_mut(4)) {
            let h = murmur3_x86_32(&[&t, &n, &id], 0x9e37_79b9_u32.wrapping_mul(seed + 1));
            chunk.copy_from_slice(&h.to_le_bytes());
        }
        out
    }
}
