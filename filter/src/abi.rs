//! The host calls the filter makes, declared against the proxy-wasm 0.2.1 ABI directly, and
//! the allocator the host fills with the data those calls return.
//!
//! A panic traps the VM and fails every later request (the proxy-wasm SDK's wrappers `panic!`
//! on statuses they do not expect), so every status other than `Ok` becomes an `Err(status)`.
#![allow(unsafe_code)]

use std::alloc::{alloc, Layout};
use std::ptr::{null, null_mut, NonNull};

/// A proxy-wasm status code other than `Ok` (1 NotFound, 2 BadArgument, 12 Unimplemented…).
pub type Status = u32;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// Header maps (`MapType` values of the ABI).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Map {
    Request = 0,
    #[cfg(feature = "responses")]
    Response = 2,
    HttpCallResponse = 6,
}

/// `BufferType` values of the ABI.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

const CAS_MISMATCH: u32 = 8;

/// Log levels of the ABI.
pub const INFO: u32 = 2;
pub const WARN: u32 = 3;
pub const ERROR: u32 = 4;
pub const CRITICAL: u32 = 5;

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
    #[cfg(feature = "responses")]
    Histogram = 2,
}

/// What a shared-data write can run into besides success.
#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    /// Someone wrote the key since it was read: read again and retry.
    CasMismatch,
    Host(Status),
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_milliseconds: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

fn status(code: u32) -> Result<(), Status> {
    if code == OK {
        Ok(())
    } else {
        Err(code)
    }
}

/// `size` bytes for the host to write into (`proxy_on_memory_allocate`), laid out as a
/// `Vec<u8>` of that capacity so that `take` can own them; null if there is no memory left.
pub fn allocate(size: usize) -> *mut u8 {
    let Ok(layout) = Layout::array::<u8>(size) else {
        return null_mut();
    };
    if layout.size() == 0 {
        // What an empty `Vec<u8>` holds: never dereferenced, and not freed.
        return NonNull::<u8>::dangling().as_ptr();
    }
    // SAFETY: the layout has a non-zero size.
    unsafe { alloc(layout) }
}

/// Takes ownership of bytes the host returned. The host allocates them through `allocate`,
/// so they are freed as an ordinary `Vec`.
fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer from the host points at `size` bytes allocated for us with
    // the global allocator, and nothing else refers to them.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: u32, message: &str) {
    // SAFETY: pointer and length describe a live `&str`.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Nanoseconds since the epoch by the host's clock.
pub fn now_ns() -> Result<u64, Status> {
    let mut t = 0u64;
    // SAFETY: `t` is a valid place for the host to write a u64.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// The whole content of a host buffer (plugin configuration, an HTTP call's response body).
pub fn buffer(buffer: Buffer) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid locals.
    match unsafe { proxy_get_buffer_bytes(buffer as u32, 0, usize::MAX, &mut data, &mut size) } {
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        code => Err(code),
    }
}

/// The first value of a header, as raw bytes (Envoy passes non-UTF-8 bytes through).
pub fn header(map: Map, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the key describes a live `&str`; out-pointers are valid locals.
    match unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    } {
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        code => Err(code),
    }
}

/// A whole header map in the ABI's serialization (see `host::Headers`), in one call.
pub fn header_pairs(map: Map) -> Result<Option<Vec<u8>>, Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid locals.
    match unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) } {
        OK => Ok(take(data, size)),
        NOT_FOUND => Ok(None),
        code => Err(code),
    }
}

pub fn set_header(map: Map, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: key and value describe live slices.
    status(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: Map, name: &str) -> Result<(), Status> {
    // SAFETY: the key describes a live `&str`.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// Sets a property of the current stream. Envoy keeps it as filter state `wasm.<path>`, which
/// the route's `%FILTER_STATE(wasm.<path>:PLAIN)%` reads. One path segment: no separator.
pub fn set_property(path: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: path and value describe live slices.
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

/// Calls a host foreign function with no arguments; its result, if any, is dropped.
pub fn call_foreign(name: &str) -> Result<(), Status> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the name describes a live `&str`; a null argument pointer with size 0 is an
    // empty argument; out-pointers are valid locals.
    let code = unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), null(), 0, &mut data, &mut size)
    };
    drop(take(data, size));
    status(code)
}

pub fn set_tick_period_ms(period: u32) -> Result<(), Status> {
    // SAFETY: a plain value.
    status(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Sends an HTTP request to `cluster` (headers in the ABI's map serialization, no body, no
/// trailers); the answer comes to `proxy_on_http_call_response` with the returned token.
pub fn http_call(cluster: &str, headers: &[u8], timeout_ms: u32) -> Result<u32, Status> {
    let trailers = 0u32.to_le_bytes();
    let mut token = 0u32;
    // SAFETY: every pointer and length describes a live slice; `token` is a valid place for
    // a u32; a null body with size 0 is no body.
    status(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            null(),
            0,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    })?;
    Ok(token)
}

/// A shared-data value and its CAS token; `(None, 0)` when the key does not exist.
pub fn shared_get(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: the key describes a live `&str`; out-pointers are valid locals.
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
        OK => Ok((take(data, size), cas)),
        NOT_FOUND => Ok((None, 0)),
        code => Err(code),
    }
}

/// Writes a shared-data value if its CAS token is still `cas` (0: unconditionally).
pub fn shared_set(key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
    // SAFETY: key and value describe live slices.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        CAS_MISMATCH => Err(SetError::CasMismatch),
        code => Err(SetError::Host(code)),
    }
}

pub fn define_metric(kind: MetricKind, name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: the name describes a live `&str`; `id` is a valid place for a u32.
    status(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    status(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    status(unsafe { proxy_record_metric(id, value) })
}
