//! The host side of the proxy-wasm 0.2.1 ABI (module `env`) and Envoy's WASI subset
//! (module `wasi_snapshot_preview1`), defined on a `wasmtime::Linker`.
//!
//! Guest mistakes that Envoy would answer with a status the SDK then panics on (a pointer
//! outside memory, a failed allocation) trap here instead, with a message that says which.

use crate::state::{
    deserialize_map, header, len_u32, serialize_map, HostState, HttpCall, LocalResponse, LogLevel,
    MapRead, MetricKind, Status, StreamCall,
};
use crate::Metric;
use wasmtime::{bail, format_err, Caller, Extern, Linker, Memory, Result};

type C<'a> = Caller<'a, HostState>;

const OK: u32 = Status::Ok as u32;
const NOT_FOUND: u32 = Status::NotFound as u32;
const BAD_ARGUMENT: u32 = Status::BadArgument as u32;
const SERIALIZATION_FAILURE: u32 = Status::SerializationFailure as u32;
const UNIMPLEMENTED: u32 = Status::Unimplemented as u32;

// WASI errno values.
const WASI_SUCCESS: u32 = 0;
const WASI_BADF: u32 = 8;
const WASI_INVAL: u32 = 28;
const WASI_NOSYS: u32 = 52;

// === guest memory ===

fn memory(caller: &mut C<'_>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("the guest exports no memory"),
    }
}

fn read(caller: &mut C<'_>, ptr: u32, len: u32) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    let start = ptr as usize;
    let end = start.checked_add(len as usize);
    end.and_then(|end| mem.data(&caller).get(start..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("guest passed {len} bytes at {ptr:#x}, outside its memory"))
}

fn read_string(caller: &mut C<'_>, ptr: u32, len: u32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

fn write(caller: &mut C<'_>, ptr: u32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    let start = ptr as usize;
    let end = start.checked_add(bytes.len());
    match end.and_then(|end| mem.data_mut(&mut *caller).get_mut(start..end)) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(())
        }
        None => bail!(
            "guest asked for {} bytes at {ptr:#x}, outside its memory",
            bytes.len()
        ),
    }
}

fn write_u32(caller: &mut C<'_>, ptr: u32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

fn write_u64(caller: &mut C<'_>, ptr: u32, value: u64) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates in the guest with its `malloc`, else `proxy_on_memory_allocate`.
fn alloc(caller: &mut C<'_>, len: u32) -> Result<u32> {
    let func = ["malloc", "proxy_on_memory_allocate"]
        .into_iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
        .ok_or_else(|| {
            format_err!("the guest exports neither malloc nor proxy_on_memory_allocate")
        })?;
    let ptr = func.typed::<u32, u32>(&*caller)?.call(&mut *caller, len)?;
    if ptr == 0 && len > 0 {
        bail!("the guest's allocator returned null for {len} bytes");
    }
    Ok(ptr)
}

/// Copies `data` into fresh guest memory and writes its address and size where the guest
/// asked: the way every proxy-wasm call returns bytes.
fn give(caller: &mut C<'_>, data: &[u8], ptr_ptr: u32, size_ptr: u32) -> Result<()> {
    let len = len_u32(data.len());
    let ptr = alloc(caller, len)?;
    write(caller, ptr, data)?;
    write_u32(caller, ptr_ptr, ptr)?;
    write_u32(caller, size_ptr, len)
}

// === definitions ===

/// Defines every host function this harness offers on `linker`.
pub fn define(linker: &mut Linker<HostState>) -> Result<()> {
    define_core(linker)?;
    define_maps(linker)?;
    define_shared(linker)?;
    define_streams_and_calls(linker)?;
    define_metrics(linker)?;
    define_wasi(linker)?;
    Ok(())
}

fn define_core(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: u32, ptr: u32, len: u32| -> Result<u32> {
            let Some(level) = LogLevel::from_u32(level) else {
                return Ok(BAD_ARGUMENT);
            };
            let message = read_string(&mut c, ptr, len)?;
            c.data_mut().log(level, message);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: u32| -> Result<u32> {
            let level = c.data().log_level as u32;
            write_u32(&mut c, ret, level)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: u32| -> Result<u32> {
            let now = c.data().now_ns;
            write_u64(&mut c, ret, now)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: u32| -> u32 {
            c.data_mut().tick_period_ms = period;
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>,
         kind: u32,
         start: u32,
         max: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> Result<u32> {
            let Some(buf) = c.data_mut().buffer(kind) else {
                return Ok(NOT_FOUND);
            };
            let start = (start as usize).min(buf.len());
            let end = start.saturating_add(max as usize).min(buf.len());
            let data = buf[start..end].to_vec();
            give(&mut c, &data, ptr_ptr, size_ptr)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, kind: u32, start: u32, size: u32, ptr: u32, len: u32| -> Result<u32> {
            let data = read(&mut c, ptr, len)?;
            let Some(buf) = c.data_mut().buffer(kind) else {
                return Ok(NOT_FOUND);
            };
            // Envoy's semantics: replace `size` bytes at `start` (start 0, size 0 prepends).
            let start = (start as usize).min(buf.len());
            let end = start.saturating_add(size as usize).min(buf.len());
            buf.splice(start..end, data);
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, ptr: u32, len: u32, ptr_ptr: u32, size_ptr: u32| -> Result<u32> {
            let path = read(&mut c, ptr, len)?;
            let Some(value) = c.data().properties.get(&path).cloned() else {
                return Ok(NOT_FOUND);
            };
            give(&mut c, &value, ptr_ptr, size_ptr)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32| -> Result<u32> {
            let path = read(&mut c, ptr, len)?;
            let value = read(&mut c, vptr, vlen)?;
            let state = c.data_mut();
            // A stream's property is its filter state (Envoy's `wasm.<path>`); the root's is
            // the VM's.
            match state.streams.get_mut(&state.effective_context) {
                Some(stream) => stream.filter_state.insert(path, value),
                None => state.properties.insert(path, value),
            };
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: u32| -> u32 {
            c.data_mut().effective_context = id;
            OK
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> u32 {
        c.data_mut().done_calls += 1;
        OK
    })?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>,
         nptr: u32,
         nlen: u32,
         aptr: u32,
         alen: u32,
         _ret_ptr: u32,
         _ret_size: u32|
         -> Result<u32> {
            let name = read_string(&mut c, nptr, nlen)?;
            let args = read(&mut c, aptr, alen)?;
            if !c.data().foreign_functions.contains(&name) {
                return Ok(NOT_FOUND);
            }
            // The foreign functions modelled here return nothing: results stay null.
            c.data_mut().foreign_calls.push((name, args));
            Ok(OK)
        },
    )?;
    Ok(())
}

fn define_maps(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, kind: u32, ptr_ptr: u32, size_ptr: u32| -> Result<u32> {
            c.data_mut().map_reads.push(MapRead {
                map: kind,
                key: None,
            });
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            let bytes = serialize_map(map);
            give(&mut c, &bytes, ptr_ptr, size_ptr)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, kind: u32, ptr: u32, len: u32| -> Result<u32> {
            let bytes = read(&mut c, ptr, len)?;
            let Some(new) = deserialize_map(&bytes) else {
                return Ok(SERIALIZATION_FAILURE);
            };
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            *map = new;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, kind: u32, ret: u32| -> Result<u32> {
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            let size = len_u32(serialize_map(map).len());
            write_u32(&mut c, ret, size)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         kind: u32,
         kptr: u32,
         klen: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> Result<u32> {
            let key = read(&mut c, kptr, klen)?;
            c.data_mut().map_reads.push(MapRead {
                map: kind,
                key: Some(key.clone()),
            });
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            let Some(value) = header(map, &key).map(<[u8]>::to_vec) else {
                return Ok(NOT_FOUND);
            };
            give(&mut c, &value, ptr_ptr, size_ptr)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, kind: u32, kptr: u32, klen: u32, vptr: u32, vlen: u32| -> Result<u32> {
            let key = read(&mut c, kptr, klen)?.to_ascii_lowercase();
            let value = read(&mut c, vptr, vlen)?;
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            // Envoy's setCopy: the first entry takes the value, the others go.
            match map.iter().position(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                Some(first) => {
                    map[first].1 = value;
                    let mut i = 0;
                    map.retain(|(k, _)| {
                        i += 1;
                        i - 1 == first || !k.eq_ignore_ascii_case(&key)
                    });
                }
                None => map.push((key, value)),
            }
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, kind: u32, kptr: u32, klen: u32, vptr: u32, vlen: u32| -> Result<u32> {
            let key = read(&mut c, kptr, klen)?.to_ascii_lowercase();
            let value = read(&mut c, vptr, vlen)?;
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            map.push((key, value));
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, kind: u32, kptr: u32, klen: u32| -> Result<u32> {
            let key = read(&mut c, kptr, klen)?;
            let Some(map) = c.data_mut().map(kind) else {
                return Ok(NOT_FOUND);
            };
            map.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            Ok(OK)
        },
    )?;
    Ok(())
}

fn define_shared(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kptr: u32,
         klen: u32,
         ptr_ptr: u32,
         size_ptr: u32,
         cas_ptr: u32|
         -> Result<u32> {
            let key = read(&mut c, kptr, klen)?;
            let Some((value, cas)) = c.data().shared.get(&key) else {
                return Ok(NOT_FOUND);
            };
            give(&mut c, &value, ptr_ptr, size_ptr)?;
            write_u32(&mut c, cas_ptr, cas)?;
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: u32, klen: u32, vptr: u32, vlen: u32, cas: u32| -> Result<u32> {
            let key = read(&mut c, kptr, klen)?;
            let value = read(&mut c, vptr, vlen)?;
            Ok(match c.data().shared.set(&key, &value, cas) {
                Ok(_) => OK,
                Err(status) => status as u32,
            })
        },
    )?;
    // Shared queues are not modelled: Linnet does not use them.
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |_: C<'_>, _: u32, _: u32, _: u32| UNIMPLEMENTED,
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32, _: u32| NOT_FOUND,
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |_: C<'_>, _: u32, _: u32, _: u32| NOT_FOUND,
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |_: C<'_>, _: u32, _: u32, _: u32| NOT_FOUND,
    )?;
    Ok(())
}

fn define_streams_and_calls(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, stream_type: u32| -> u32 {
            let context_id = c.data().effective_context;
            c.data_mut().stream_calls.push(StreamCall::Continue {
                context_id,
                stream_type,
            });
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: C<'_>, stream_type: u32| -> u32 {
            let context_id = c.data().effective_context;
            c.data_mut().stream_calls.push(StreamCall::Close {
                context_id,
                stream_type,
            });
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: u32,
         dptr: u32,
         dlen: u32,
         bptr: u32,
         blen: u32,
         hptr: u32,
         hlen: u32,
         grpc_status: i32|
         -> Result<u32> {
            let details = read(&mut c, dptr, dlen)?;
            let body = read(&mut c, bptr, blen)?;
            let Some(headers) = deserialize_map(&read(&mut c, hptr, hlen)?) else {
                return Ok(SERIALIZATION_FAILURE);
            };
            let context_id = c.data().effective_context;
            c.data_mut().local_responses.push(LocalResponse {
                context_id,
                status,
                details,
                body,
                headers,
                grpc_status,
            });
            Ok(OK)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         uptr: u32,
         ulen: u32,
         hptr: u32,
         hlen: u32,
         bptr: u32,
         blen: u32,
         tptr: u32,
         tlen: u32,
         timeout_ms: u32,
         token_ptr: u32|
         -> Result<u32> {
            let upstream = read_string(&mut c, uptr, ulen)?;
            let (Some(headers), Some(trailers)) = (
                deserialize_map(&read(&mut c, hptr, hlen)?),
                deserialize_map(&read(&mut c, tptr, tlen)?),
            ) else {
                return Ok(BAD_ARGUMENT);
            };
            let body = read(&mut c, bptr, blen)?;
            let state = c.data_mut();
            let token = state.next_token;
            state.next_token += 1;
            let context_id = state.effective_context;
            state.http_calls.push(HttpCall {
                token,
                context_id,
                upstream,
                headers,
                body,
                trailers,
                timeout_ms,
                pending: true,
            });
            write_u32(&mut c, token_ptr, token)?;
            Ok(OK)
        },
    )?;
    // gRPC is not modelled: Linnet does not use it.
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: C<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32| { UNIMPLEMENTED },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            UNIMPLEMENTED
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32| UNIMPLEMENTED,
    )?;
    l.func_wrap("env", "proxy_grpc_cancel", |_: C<'_>, _: u32| UNIMPLEMENTED)?;
    l.func_wrap("env", "proxy_grpc_close", |_: C<'_>, _: u32| UNIMPLEMENTED)?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |_: C<'_>, _: u32, _: u32, _: u32| UNIMPLEMENTED,
    )?;
    Ok(())
}

fn metric_mut<'a>(c: &'a mut C<'_>, id: u32) -> Option<&'a mut Metric> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    c.data_mut().metrics.get_mut(index)
}

fn define_metrics(l: &mut Linker<HostState>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: u32, nptr: u32, nlen: u32, ret: u32| -> Result<u32> {
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(BAD_ARGUMENT),
            };
            let name = read_string(&mut c, nptr, nlen)?;
            let metrics = &mut c.data_mut().metrics;
            // Ids are index + 1, so 0 is never a valid id; a name defined twice keeps its id.
            let id = match metrics.iter().position(|m| m.name == name) {
                Some(i) if metrics[i].kind != kind => return Ok(BAD_ARGUMENT),
                Some(i) => i + 1,
                None => {
                    metrics.push(Metric {
                        name,
                        kind,
                        value: 0,
                        samples: Vec::new(),
                    });
                    metrics.len()
                }
            };
            write_u32(&mut c, ret, len_u32(id))?;
            Ok(OK)
        },
    )?;
    // Envoy's rules: counters only go up (offset > 0), gauges add, histograms only record.
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut c: C<'_>, id: u32, offset: i64| -> u32 {
            let Some(m) = metric_mut(&mut c, id) else {
                return NOT_FOUND;
            };
            match m.kind {
                MetricKind::Counter if offset > 0 => m.value = m.value.saturating_add(offset),
                MetricKind::Gauge => m.value = m.value.saturating_add(offset),
                _ => return BAD_ARGUMENT,
            }
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |mut c: C<'_>, id: u32, value: u64| -> u32 {
            let Some(m) = metric_mut(&mut c, id) else {
                return NOT_FOUND;
            };
            let signed = i64::try_from(value).unwrap_or(i64::MAX);
            match m.kind {
                MetricKind::Counter => m.value = m.value.saturating_add(signed),
                MetricKind::Gauge => m.value = signed,
                MetricKind::Histogram => m.samples.push(value),
            }
            OK
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: u32, ret: u32| -> Result<u32> {
            let value = match metric_mut(&mut c, id) {
                None => return Ok(NOT_FOUND),
                Some(m) if m.kind == MetricKind::Histogram => return Ok(BAD_ARGUMENT),
                Some(m) => m.value,
            };
            write_u64(&mut c, ret, value as u64)?;
            Ok(OK)
        },
    )?;
    Ok(())
}

fn define_wasi(l: &mut Linker<HostState>) -> Result<()> {
    const W: &str = "wasi_snapshot_preview1";
    l.func_wrap(
        W,
        "fd_write",
        |mut c: C<'_>, fd: u32, iovs: u32, iovs_len: u32, nwritten: u32| -> Result<u32> {
            if fd != 1 && fd != 2 {
                return Ok(WASI_BADF);
            }
            let mut out = Vec::new();
            for i in 0..iovs_len {
                let iov = read(&mut c, iovs.wrapping_add(i.wrapping_mul(8)), 8)?;
                let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                out.extend(read(&mut c, ptr, len)?);
            }
            write_u32(&mut c, nwritten, len_u32(out.len()))?;
            // Envoy logs guest stdout at info and stderr at error.
            let level = if fd == 1 {
                LogLevel::Info
            } else {
                LogLevel::Error
            };
            let text = String::from_utf8_lossy(&out);
            let text = text.trim_end_matches('\n');
            if !text.is_empty() {
                c.data_mut().log(level, text.to_owned());
            }
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(W, "fd_read", |_: C<'_>, _: u32, _: u32, _: u32, _: u32| {
        WASI_BADF
    })?;
    l.func_wrap(W, "fd_close", |_: C<'_>, _: u32| WASI_BADF)?;
    l.func_wrap(W, "fd_seek", |_: C<'_>, _: u32, _: i64, _: u32, _: u32| {
        WASI_BADF
    })?;
    l.func_wrap(
        W,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: u32, ret: u32| -> Result<u32> {
            if fd > 2 {
                return Ok(WASI_BADF);
            }
            // fdstat: filetype character_device (2), no flags, no rights beyond the basics.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            write(&mut c, ret, &stat)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(W, "fd_fdstat_set_flags", |_: C<'_>, _: u32, _: u32| {
        WASI_NOSYS
    })?;
    // No preopened directories: BADF ends wasi-libc's preopen scan.
    l.func_wrap(W, "fd_prestat_get", |_: C<'_>, _: u32, _: u32| WASI_BADF)?;
    l.func_wrap(
        W,
        "fd_prestat_dir_name",
        |_: C<'_>, _: u32, _: u32, _: u32| WASI_BADF,
    )?;
    l.func_wrap(
        W,
        "clock_time_get",
        |mut c: C<'_>, id: u32, _precision: u64, ret: u32| -> Result<u32> {
            if id > 3 {
                return Ok(WASI_INVAL);
            }
            let now = c.data().now_ns;
            write_u64(&mut c, ret, now)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "clock_res_get",
        |mut c: C<'_>, _id: u32, ret: u32| -> Result<u32> {
            write_u64(&mut c, ret, 1)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "random_get",
        |mut c: C<'_>, ptr: u32, len: u32| -> Result<u32> {
            let mut bytes = Vec::with_capacity(len as usize + 8);
            while bytes.len() < len as usize {
                let word = c.data_mut().next_random();
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes.truncate(len as usize);
            write(&mut c, ptr, &bytes)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(
        W,
        "environ_sizes_get",
        |mut c: C<'_>, count: u32, size: u32| -> Result<u32> {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(W, "environ_get", |_: C<'_>, _: u32, _: u32| WASI_SUCCESS)?;
    l.func_wrap(
        W,
        "args_sizes_get",
        |mut c: C<'_>, count: u32, size: u32| -> Result<u32> {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(WASI_SUCCESS)
        },
    )?;
    l.func_wrap(W, "args_get", |_: C<'_>, _: u32, _: u32| WASI_SUCCESS)?;
    l.func_wrap(W, "sched_yield", |_: C<'_>| WASI_SUCCESS)?;
    l.func_wrap(
        W,
        "poll_oneoff",
        |_: C<'_>, _: u32, _: u32, _: u32, _: u32| WASI_NOSYS,
    )?;
    l.func_wrap(W, "proc_exit", |_: C<'_>, code: u32| -> Result<()> {
        bail!("the guest called proc_exit({code})")
    })?;
    Ok(())
}
