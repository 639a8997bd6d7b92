//! Everything one VM's host knows, kept in its `wasmtime::Store` so tests run in parallel.

use crate::shared::SharedData;
use std::collections::{HashMap, HashSet};

/// A header map as Envoy keeps it: ordered, duplicates allowed, raw bytes.
pub type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// Proxy-wasm status codes (ABI 0.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// A call the guest dispatched with `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// The context that dispatched it; the response is delivered there.
    pub context_id: u32,
    pub upstream: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout_ms: u32,
    /// Still waiting for [`crate::Vm::http_call_response`].
    pub pending: bool,
}

impl HttpCall {
    /// First value of one of the call's headers (`:path`, `:method`, ...).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        header(&self.headers, name.as_bytes())
    }
}

/// A read of a header map by the guest: one header's value, or the whole map (`key: None`).
/// Each read that finds something costs a real host a call back into the guest's allocator,
/// so the count is part of what a request costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRead {
    /// The ABI's map type: 0 request headers, 2 response headers, ...
    pub map: u32,
    pub key: Option<Vec<u8>>,
}

/// A `proxy_send_local_response` the guest made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub context_id: u32,
    pub status: u32,
    pub details: Vec<u8>,
    pub body: Vec<u8>,
    pub headers: Headers,
    pub grpc_status: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counter or gauge value.
    pub value: i64,
    /// Every value recorded on a histogram, in order.
    pub samples: Vec<u64>,
}

/// One HTTP stream's maps and buffers.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub request_headers: Headers,
    pub request_trailers: Headers,
    pub response_headers: Headers,
    pub response_trailers: Headers,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// What the guest set with `proxy_set_property` while this stream was the effective
    /// context: Envoy's filter state `wasm.<path>`.
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
}

/// The response to an http call, readable by the guest while it is being delivered.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// What `proxy_continue_stream` / `proxy_close_stream` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCall {
    Continue { context_id: u32, stream_type: u32 },
    Close { context_id: u32, stream_type: u32 },
}

pub struct HostState {
    pub shared: SharedData,
    pub now_ns: u64,
    pub log_level: LogLevel,
    pub logs: Vec<LogLine>,
    /// Echo guest logs to stderr (env `LINNET_WASM_LOG`), for debugging a test.
    pub echo_logs: bool,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub tick_period_ms: u32,
    pub effective_context: u32,
    pub streams: HashMap<u32, Stream>,
    pub call_response: Option<CallResponse>,
    pub http_calls: Vec<HttpCall>,
    pub next_token: u32,
    /// Foreign functions the host offers; others answer NotFound.
    pub foreign_functions: HashSet<String>,
    /// Accepted foreign calls: name and arguments.
    pub foreign_calls: Vec<(String, Vec<u8>)>,
    pub map_reads: Vec<MapRead>,
    pub metrics: Vec<Metric>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// The route's `response_headers_to_add`, added to every response before the guest sees
    /// it, as Envoy's router does.
    pub route_response_headers: Vec<(String, String)>,
    pub local_responses: Vec<LocalResponse>,
    pub stream_calls: Vec<StreamCall>,
    pub done_calls: usize,
    pub rng: u64,
}

// === impl HostState ===

impl HostState {
    pub fn new(shared: SharedData) -> Self {
        HostState {
            shared,
            // 2024-01-01T00:00:00Z: a plausible wall clock that tests move by hand.
            now_ns: 1_704_067_200_000_000_000,
            log_level: LogLevel::Trace,
            logs: Vec::new(),
            echo_logs: std::env::var_os("LINNET_WASM_LOG").is_some(),
            vm_config: Vec::new(),
            plugin_config: Vec::new(),
            tick_period_ms: 0,
            effective_context: 0,
            streams: HashMap::new(),
            call_response: None,
            http_calls: Vec::new(),
            next_token: 1,
            foreign_functions: HashSet::from(["clear_route_cache".to_owned()]),
            foreign_calls: Vec::new(),
            map_reads: Vec::new(),
            metrics: Vec::new(),
            properties: HashMap::new(),
            route_response_headers: Vec::new(),
            local_responses: Vec::new(),
            stream_calls: Vec::new(),
            done_calls: 0,
            rng: 0x853c_49e6_748f_ea9b,
        }
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        if self.echo_logs {
            eprintln!("[wasm {level:?}] {message}");
        }
        self.logs.push(LogLine { level, message });
    }

    /// The header map `map_type` of the effective context, if it has one.
    pub fn map(&mut self, map_type: u32) -> Option<&mut Headers> {
        let ctx = self.effective_context;
        match map_type {
            0 => self.streams.get_mut(&ctx).map(|s| &mut s.request_headers),
            1 => self.streams.get_mut(&ctx).map(|s| &mut s.request_trailers),
            2 => self.streams.get_mut(&ctx).map(|s| &mut s.response_headers),
            3 => self.streams.get_mut(&ctx).map(|s| &mut s.response_trailers),
            6 => self.call_response.as_mut().map(|r| &mut r.headers),
            7 => self.call_response.as_mut().map(|r| &mut r.trailers),
            _ => None,
        }
    }

    /// The buffer `buffer_type` as the effective context sees it.
    pub fn buffer(&mut self, buffer_type: u32) -> Option<&mut Vec<u8>> {
        let ctx = self.effective_context;
        match buffer_type {
            0 => self.streams.get_mut(&ctx).map(|s| &mut s.request_body),
            1 => self.streams.get_mut(&ctx).map(|s| &mut s.response_body),
            4 => self.call_response.as_mut().map(|r| &mut r.body),
            6 => Some(&mut self.vm_config),
            7 => Some(&mut self.plugin_config),
            _ => None,
        }
    }

    pub fn metric_by_name(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// xorshift64*: deterministic per VM, so a failing test replays.
    pub fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// First value of `name` (ASCII case-insensitive, as Envoy's lower-cased lookups).
pub fn header<'a>(map: &'a Headers, name: &[u8]) -> Option<&'a [u8]> {
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The proxy-wasm wire format of a header map: u32 count, (u32 key_len, u32 value_len) per
/// pair, then each key and value followed by a NUL byte. All integers little-endian.
pub fn serialize_map(map: &Headers) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len_u32(map.len()).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.len()).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses [`serialize_map`]'s format; `None` when it is malformed.
pub fn deserialize_map(bytes: &[u8]) -> Option<Headers> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    };
    let count = u32_at(0)?;
    let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut map = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let klen = u32_at(4 + i * 8)?;
        let vlen = u32_at(8 + i * 8)?;
        let key = bytes.get(data..data.checked_add(klen)?)?.to_vec();
        data = data.checked_add(klen + 1)?;
        let value = bytes.get(data..data.checked_add(vlen)?)?.to_vec();
        data = data.checked_add(vlen + 1)?;
        map.push((key, value));
    }
    (data <= bytes.len()).then_some(map)
}

/// Sizes handed to a wasm32 guest; the harness never builds anything near 4 GiB.
pub fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl LogLevel {
    pub fn from_u32(level: u32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }
}
