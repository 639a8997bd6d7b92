//! One proxy-wasm VM driven by a test: load, start, configure, then HTTP streams.

use crate::abi;
use crate::shared::SharedData;
use crate::state::{
    header, CallResponse, Headers, HostState, HttpCall, LocalResponse, LogLevel, LogLine, MapRead,
    MetricKind, Stream, StreamCall,
};
use anyhow::{anyhow, bail, Context as _, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use wasmtime::{Config, Engine, Instance, Linker, Module, OptLevel, Store, Val};

/// What a stream callback asked Envoy to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    Other(i32),
}

const ROOT_ID: u32 = 1;

/// Compiled modules, by path. Compiling the filter takes far longer than instantiating it,
/// and a `Module` is immutable, so the tests of one binary share it; no VM state lives here.
fn compiled(path: &Path) -> Result<(Engine, Module)> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Module>>> = OnceLock::new();
    let engine = ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            // Tests run each module briefly: compile time matters more than code speed.
            config.cranelift_opt_level(OptLevel::None);
            // Fuel counts the guest's wasm instructions (`Vm::fuel_used`); it never runs out.
            config.consume_fuel(true);
            Engine::new(&config).unwrap_or_else(|_| Engine::default())
        })
        .clone();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = modules.get(path) {
        return Ok((engine, m.clone()));
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let module = Module::new(&engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile {}", path.display()))?;
    modules.insert(path.to_owned(), module.clone());
    Ok((engine, module))
}

/// The names of the functions the module at `path` exports, sorted: what the host will call.
pub fn exported_functions(path: &Path) -> Result<Vec<String>> {
    let (_, module) = compiled(path)?;
    let mut names: Vec<String> = module
        .exports()
        .filter(|e| e.ty().func().is_some())
        .map(|e| e.name().to_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// A proxy-wasm VM: one guest instance with its own host state (one Envoy worker thread).
pub struct Vm {
    store: Store<HostState>,
    instance: Instance,
    root_started: bool,
    next_id: u32,
    /// Set by the first trap: a trapped VM is dead, as in Envoy.
    trapped: Option<String>,
}

// === impl Vm ===

impl Vm {
    /// Loads the `.wasm` at `path` with its own shared-data store.
    pub fn load(path: &Path) -> Result<Vm> {
        Vm::load_shared(path, &SharedData::new())
    }

    /// Loads the `.wasm` at `path`; VMs given the same `shared` see each other's shared data.
    pub fn load_shared(path: &Path, shared: &SharedData) -> Result<Vm> {
        let (engine, module) = compiled(path)?;
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(anyhow::Error::from)?;
        let mut store = Store::new(&engine, HostState::new(shared.clone()));

        let missing: Vec<String> = module
            .imports()
            .filter(|import| linker.get_by_import(&mut store, import).is_none())
            .map(|import| format!("{}::{} ({:?})", import.module(), import.name(), import.ty()))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: unknown import(s) {}; this host offers the proxy-wasm 0.2.1 ABI and Envoy's WASI subset",
                path.display(),
                missing.join(", ")
            );
        }
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot instantiate {}", path.display()))?;
        store.set_fuel(u64::MAX)?;
        let mut vm = Vm {
            store,
            instance,
            root_started: false,
            next_id: ROOT_ID + 1,
            trapped: None,
        };
        for init in ["_initialize", "_start"] {
            if vm.instance.get_func(&mut vm.store, init).is_some() {
                vm.call(init, 0, &[])?;
                break;
            }
        }
        Ok(vm)
    }

    /// The guest's wasm instructions executed so far (wasmtime's fuel: about one per
    /// operator), host calls not included. A measure of the filter's own work per callback.
    pub fn fuel_used(&self) -> u64 {
        u64::MAX - self.store.get_fuel().unwrap_or(u64::MAX)
    }

    /// Calls export `name` as context `context_id`; a trap becomes an error and kills the VM.
    /// A callback the guest does not export is skipped, as Envoy skips it: `Ok(None)`.
    fn call(&mut self, name: &str, context_id: u32, args: &[Val]) -> Result<Option<i32>> {
        if let Some(trap) = &self.trapped {
            bail!("{name}: the VM trapped earlier and is dead: {trap}");
        }
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        self.store.data_mut().effective_context = context_id;
        if let Err(e) = func.call(&mut self.store, args, &mut results) {
            let mut message = format!("wasm trap in {name}: {:?}", anyhow::Error::from(e));
            if let Some(last) = self
                .logs()
                .iter()
                .rev()
                .find(|l| l.level == LogLevel::Critical)
            {
                message.push_str(&format!(" (last critical log: {})", last.message));
            }
            self.trapped = Some(message.clone());
            bail!(message);
        }
        Ok(results.first().and_then(Val::i32))
    }

    /// A callback that answers true or false; one the guest does not export counts as true,
    /// as in Envoy (a VM without `proxy_on_configure` takes any configuration).
    fn call_bool(&mut self, name: &str, context_id: u32, args: &[Val]) -> Result<bool> {
        Ok(self.call(name, context_id, args)?.is_none_or(|r| r != 0))
    }

    /// Creates the root context and calls `proxy_on_vm_start` with this VM configuration.
    pub fn start_vm(&mut self, vm_config: impl AsRef<[u8]>) -> Result<bool> {
        self.store.data_mut().vm_config = vm_config.as_ref().to_vec();
        if !self.root_started {
            self.call(
                "proxy_on_context_create",
                ROOT_ID,
                &[i32v(ROOT_ID), i32v(0)],
            )?;
            self.root_started = true;
        }
        let size = self.store.data().vm_config.len();
        self.call_bool(
            "proxy_on_vm_start",
            ROOT_ID,
            &[i32v(ROOT_ID), i32v_len(size)],
        )
    }

    /// Calls `proxy_on_configure` with this plugin configuration; true if the guest took it.
    pub fn configure(&mut self, plugin_config: impl AsRef<[u8]>) -> Result<bool> {
        if !self.root_started {
            bail!("configure: call start_vm first");
        }
        self.store.data_mut().plugin_config = plugin_config.as_ref().to_vec();
        let size = self.store.data().plugin_config.len();
        self.call_bool(
            "proxy_on_configure",
            ROOT_ID,
            &[i32v(ROOT_ID), i32v_len(size)],
        )
    }

    /// Starts an HTTP stream: a new context under the root.
    pub fn http(&mut self) -> Result<Http<'_>> {
        self.http_under(ROOT_ID)
    }

    /// Another root context in this VM, as Envoy makes for a second plugin configuration that
    /// shares the VM: created, configured with `plugin_config`; its id, if the guest took it.
    pub fn add_root(&mut self, plugin_config: impl AsRef<[u8]>) -> Result<Option<u32>> {
        if !self.root_started {
            bail!("add_root: call start_vm first");
        }
        let id = self.next_id;
        self.next_id += 1;
        self.call("proxy_on_context_create", id, &[i32v(id), i32v(0)])?;
        self.store.data_mut().plugin_config = plugin_config.as_ref().to_vec();
        let size = self.store.data().plugin_config.len();
        let took = self.call_bool("proxy_on_configure", id, &[i32v(id), i32v_len(size)])?;
        Ok(took.then_some(id))
    }

    /// Removes a root context as Envoy does when its plugin configuration goes:
    /// `proxy_on_done`, then `proxy_on_delete`.
    pub fn delete_root(&mut self, root: u32) -> Result<()> {
        self.call("proxy_on_done", root, &[i32v(root)])?;
        self.call("proxy_on_delete", root, &[i32v(root)])?;
        Ok(())
    }

    /// Starts an HTTP stream under root context `root`.
    pub fn http_under(&mut self, root: u32) -> Result<Http<'_>> {
        let http = self.http_unknown_to_guest()?;
        let id = http.id;
        http.vm
            .call("proxy_on_context_create", id, &[i32v(id), i32v(root)])?;
        Ok(http)
    }

    /// A stream whose context the guest was never told of (no `proxy_on_context_create`):
    /// every later callback names a context id the guest does not know.
    pub fn http_unknown_to_guest(&mut self) -> Result<Http<'_>> {
        if !self.root_started {
            bail!("http: call start_vm first");
        }
        let id = self.next_id;
        self.next_id += 1;
        self.store.data_mut().streams.insert(id, Stream::default());
        Ok(Http { vm: self, id })
    }

    /// Calls `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<()> {
        self.call("proxy_on_tick", ROOT_ID, &[i32v(ROOT_ID)])
            .map(drop)
    }

    /// The tick period the guest asked for, in milliseconds (0: no ticks).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    // --- clock ---

    pub fn now_ns(&self) -> u64 {
        self.store.data().now_ns
    }

    pub fn set_time_ns(&mut self, ns: u64) {
        self.store.data_mut().now_ns = ns;
    }

    /// Moves the host clock forward.
    pub fn advance(&mut self, ms: u64) {
        let now = &mut self.store.data_mut().now_ns;
        *now = now.saturating_add(ms.saturating_mul(1_000_000));
    }

    // --- logs ---

    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Messages logged at `level` or above.
    pub fn logs_at(&self, level: LogLevel) -> Vec<&str> {
        self.logs()
            .iter()
            .filter(|l| l.level >= level)
            .map(|l| l.message.as_str())
            .collect()
    }

    /// Whether some line at `level` or above contains `needle`.
    pub fn logged(&self, level: LogLevel, needle: &str) -> bool {
        self.logs_at(level).iter().any(|m| m.contains(needle))
    }

    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// The level `proxy_get_log_level` reports (default trace).
    pub fn set_log_level(&mut self, level: LogLevel) {
        self.store.data_mut().log_level = level;
    }

    // --- metrics ---

    /// A counter's or gauge's value; `None` if undefined (or a negative gauge).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let m = self.store.data().metric_by_name(name)?;
        match m.kind {
            MetricKind::Histogram => None,
            _ => u64::try_from(m.value).ok(),
        }
    }

    /// Every value recorded on a histogram, in order; empty if undefined.
    pub fn histogram(&self, name: &str) -> Vec<u64> {
        self.store
            .data()
            .metric_by_name(name)
            .map(|m| m.samples.clone())
            .unwrap_or_default()
    }

    /// How `name` was defined, if it was.
    pub fn metric_kind(&self, name: &str) -> Option<MetricKind> {
        self.store.data().metric_by_name(name).map(|m| m.kind)
    }

    /// Names of every defined metric, in definition order.
    pub fn metric_names(&self) -> Vec<String> {
        self.store
            .data()
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    // --- foreign functions, calls, shared data, properties ---

    /// How many times the guest called the foreign function `name` successfully.
    pub fn foreign_calls(&self, name: &str) -> usize {
        self.store
            .data()
            .foreign_calls
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    }

    /// Offers (or withdraws) a foreign function; withdrawn ones answer NotFound.
    pub fn set_foreign_function(&mut self, name: &str, available: bool) {
        let set = &mut self.store.data_mut().foreign_functions;
        if available {
            set.insert(name.to_owned());
        } else {
            set.remove(name);
        }
    }

    /// Every call dispatched with `proxy_http_call`, in order.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().http_calls
    }

    /// Delivers the response to the http call `token` (`proxy_on_http_call_response`).
    pub fn http_call_response<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        token: u32,
        headers: &[(K, V)],
        body: &[u8],
    ) -> Result<()> {
        let call = self
            .store
            .data_mut()
            .http_calls
            .iter_mut()
            .find(|c| c.token == token && c.pending)
            .ok_or_else(|| anyhow!("no pending http call with token {token}"))?;
        call.pending = false;
        let context_id = call.context_id;
        let response = CallResponse {
            headers: to_headers(headers),
            body: body.to_vec(),
            trailers: Vec::new(),
        };
        let (n, size) = (response.headers.len(), response.body.len());
        self.store.data_mut().call_response = Some(response);
        let result = self.call(
            "proxy_on_http_call_response",
            context_id,
            &[
                i32v(context_id),
                i32v(token),
                i32v_len(n),
                i32v_len(size),
                i32v(0),
            ],
        );
        self.store.data_mut().call_response = None;
        result.map(drop)
    }

    pub fn shared(&self) -> &SharedData {
        &self.store.data().shared
    }

    /// Sets a property the guest reads with `proxy_get_property` (path segments as the SDK
    /// serializes them: each followed by a NUL).
    pub fn set_property(&mut self, path: &[&str], value: impl AsRef<[u8]>) {
        let mut key = Vec::new();
        for segment in path {
            key.extend_from_slice(segment.as_bytes());
            key.push(0);
        }
        self.store
            .data_mut()
            .properties
            .insert(key, value.as_ref().to_vec());
    }

    /// Adds `name: value` to every response, as a route's `response_headers_to_add` with
    /// `keep_empty_value: false` does: `%FILTER_STATE(wasm.<key>:PLAIN)%` is the stream's
    /// filter state `<key>`, and a header whose value comes out empty is left out. Other
    /// `%…%` formatters are not understood and make the response fail.
    pub fn route_response_header(&mut self, name: &str, value: &str) {
        self.store
            .data_mut()
            .route_response_headers
            .push((name.to_owned(), value.to_owned()));
    }

    pub fn local_responses(&self) -> &[LocalResponse] {
        &self.store.data().local_responses
    }

    pub fn stream_calls(&self) -> &[StreamCall] {
        &self.store.data().stream_calls
    }

    /// Every header map read the guest made, in order.
    pub fn map_reads(&self) -> &[MapRead] {
        &self.store.data().map_reads
    }

    /// How many times the guest called `proxy_done`.
    pub fn done_calls(&self) -> usize {
        self.store.data().done_calls
    }

    /// Whether the VM trapped; every later call into it fails.
    pub fn trapped(&self) -> Option<&str> {
        self.trapped.as_deref()
    }
}

/// A header value with each `%FILTER_STATE(wasm.<key>:PLAIN)%` replaced by the filter state
/// `<key>` (empty when unset).
fn expand_filter_state(format: &str, state: &HashMap<Vec<u8>, Vec<u8>>) -> Result<Vec<u8>> {
    const OPEN: &str = "%FILTER_STATE(wasm.";
    const CLOSE: &str = ":PLAIN)%";
    let mut out = Vec::new();
    let mut rest = format;
    while let Some(at) = rest.find('%') {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let Some(tail) = rest[at..].strip_prefix(OPEN) else {
            bail!("the test host does not understand the formatter in {format:?}");
        };
        let Some(end) = tail.find(CLOSE) else {
            bail!("unterminated formatter in {format:?}");
        };
        if let Some(value) = state.get(&tail.as_bytes()[..end]) {
            out.extend_from_slice(value);
        }
        rest = &tail[end + CLOSE.len()..];
    }
    out.extend_from_slice(rest.as_bytes());
    Ok(out)
}

/// One HTTP stream on a [`Vm`]. Finish it with [`Http::done`].
pub struct Http<'vm> {
    vm: &'vm mut Vm,
    id: u32,
}

// === impl Http ===

impl Http<'_> {
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }

    fn stream(&self) -> Option<&Stream> {
        self.vm.store.data().streams.get(&self.id)
    }

    fn stream_mut(&mut self) -> Result<&mut Stream> {
        let id = self.id;
        self.vm
            .store
            .data_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("stream {id} is gone"))
    }

    fn action(&mut self, name: &str, args: &[Val]) -> Result<Action> {
        // A callback the guest does not export lets the stream go on, as in Envoy.
        Ok(match self.vm.call(name, self.id, args)? {
            None | Some(0) => Action::Continue,
            Some(1) => Action::Pause,
            Some(other) => Action::Other(other),
        })
    }

    /// Envoy receives these request headers (raw bytes, order kept) and calls
    /// `proxy_on_request_headers`.
    pub fn request_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        headers: &[(K, V)],
    ) -> Result<Action> {
        let map = to_headers(headers);
        let n = map.len();
        self.stream_mut()?.request_headers = map;
        let id = self.id;
        self.action(
            "proxy_on_request_headers",
            &[i32v(id), i32v_len(n), i32v(0)],
        )
    }

    /// `proxy_on_request_body` with this chunk.
    pub fn request_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<Action> {
        self.stream_mut()?.request_body = body.to_vec();
        let id = self.id;
        self.action(
            "proxy_on_request_body",
            &[
                i32v(id),
                i32v_len(body.len()),
                i32v(u32::from(end_of_stream)),
            ],
        )
    }

    /// The upstream answers with these headers; calls `proxy_on_response_headers`.
    pub fn response_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        headers: &[(K, V)],
    ) -> Result<Action> {
        let mut map = to_headers(headers);
        let added = self.vm.store.data().route_response_headers.clone();
        let stream = self.stream_mut()?;
        for (name, format) in added {
            let value = expand_filter_state(&format, &stream.filter_state)?;
            if !value.is_empty() {
                map.push((name.into_bytes(), value));
            }
        }
        let n = map.len();
        stream.response_headers = map;
        let id = self.id;
        self.action(
            "proxy_on_response_headers",
            &[i32v(id), i32v_len(n), i32v(0)],
        )
    }

    /// `proxy_on_response_body` with this chunk.
    pub fn response_body(&mut self, body: &[u8], end_of_stream: bool) -> Result<Action> {
        self.stream_mut()?.response_body = body.to_vec();
        let id = self.id;
        self.action(
            "proxy_on_response_body",
            &[
                i32v(id),
                i32v_len(body.len()),
                i32v(u32::from(end_of_stream)),
            ],
        )
    }

    /// First value of a request header as the upstream would see it now.
    pub fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.stream()
            .and_then(|s| header(&s.request_headers, name.as_bytes()))
            .map(<[u8]>::to_vec)
    }

    /// [`Http::request_header`] as text (lossy).
    pub fn request_header_str(&self, name: &str) -> Option<String> {
        self.request_header(name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// The whole request header map, in order.
    pub fn request_header_map(&self) -> Headers {
        self.stream()
            .map(|s| s.request_headers.clone())
            .unwrap_or_default()
    }

    /// The stream's filter state `key` (what the guest set with `proxy_set_property`).
    pub fn filter_state(&self, key: &str) -> Option<Vec<u8>> {
        self.stream()?.filter_state.get(key.as_bytes()).cloned()
    }

    pub fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        self.stream()
            .and_then(|s| header(&s.response_headers, name.as_bytes()))
            .map(<[u8]>::to_vec)
    }

    /// Every value of a response header, in order (e.g. each `set-cookie`).
    pub fn response_header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.stream()
            .map(|s| {
                s.response_headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn response_header_map(&self) -> Headers {
        self.stream()
            .map(|s| s.response_headers.clone())
            .unwrap_or_default()
    }

    /// Ends the stream as Envoy does: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn done(self) -> Result<()> {
        let id = self.id;
        self.vm.call("proxy_on_done", id, &[i32v(id)])?;
        self.vm.call("proxy_on_log", id, &[i32v(id)])?;
        self.vm.call("proxy_on_delete", id, &[i32v(id)])?;
        self.vm.store.data_mut().streams.remove(&id);
        Ok(())
    }
}

fn to_headers<K: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(K, V)]) -> Headers {
    headers
        .iter()
        .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
        .collect()
}

/// A wasm32 `u32`/`usize` argument.
fn i32v(v: u32) -> Val {
    Val::I32(v.cast_signed())
}

fn i32v_len(len: usize) -> Val {
    i32v(crate::state::len_u32(len))
}
