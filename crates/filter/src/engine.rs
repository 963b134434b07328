//! The engine (built once), plugin modules (compiled once per content) and their limits.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use crate::clock::{Clock, TICK};
use crate::host::{self, FilterIndicesV1, FilterIndicesV2, State};
use crate::proxy_wasm;
use crate::shared::Shared;
use crate::wasi::Wasi;

/// The largest memory cap a plugin may ask for; pooled memory slots are this large.
pub const MAX_MEMORY: usize = 512 << 20;

/// The most bytes of a memory or table slot reset in place, rather than unmapped, when an
/// instance ends: the pages a small filter dirties, bounding what idle slots keep resident.
const KEEP_RESIDENT: usize = 256 << 10;

/// The least time a configuration check or an instance's start-up code gets. Python and
/// JavaScript components start an interpreter; on a busy machine that must not fail requests.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(1);

/// Limits of one filter instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long one call may run before it is stopped.
    pub deadline: Duration,
    /// The most linear memory an instance may have.
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_millis(50), memory: 64 << 20 }
    }
}

/// Compiles and instantiates plugins. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    /// The host and [`Wasi`]: every function synchronous.
    sync_linker: Linker<State>,
    /// The host and wasmtime-wasi's asynchronous WASI, for components that import more (or
    /// call Services).
    async_linker: Linker<State>,
    /// The host of proxy-wasm modules.
    proxy_wasm: wasmtime::Linker<proxy_wasm::Host>,
    clock: Arc<Clock>,
    /// Buckets, holds and values shared by all instances.
    shared: Arc<Shared>,
    cache_dir: Option<PathBuf>,
    /// Distinguishes compiled code of other engine settings or versions in the cache.
    settings: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("cache_dir", &self.inner.cache_dir).finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine whose compiled modules are cached in `cache_dir` (created if missing).
    /// Starts the thread that ticks call deadlines while calls are in flight.
    pub fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::new();
        // Instances live per worker thread (reused) or per request in flight (fresh); beyond
        // the pool, instantiation fails and the attachment's failure policy applies.
        pool.total_component_instances(2_000)
            .total_core_instances(4_000)
            .total_memories(2_000)
            .total_tables(4_000)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .max_core_instances_per_component(64)
            .max_memory_size(MAX_MEMORY)
            .decommit_batch_size(64);
        // A slot given back is reset by copying back only the pages the instance dirtied, found
        // with the PAGEMAP_SCAN ioctl (Linux 6.7 and later), instead of unmapping them: the next
        // fresh instance takes no page faults. Without the ioctl the whole kept region would be
        // zeroed on every reset, several times slower than unmapping, so slots keep nothing then.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(KEEP_RESIDENT);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.memory_reservation(MAX_MEMORY as u64);
        let engine = wasmtime::Engine::new(&config)?;

        let mut sync_linker = Linker::new(&engine);
        Wasi::add_to_linker(&mut sync_linker, |state: &mut State| &mut state.wasi)?;
        host::v1::Filter::add_to_linker::<_, HasSelf<State>>(&mut sync_linker, |state| state)?;
        host::v2::add_sync_to_linker(&mut sync_linker)?;
        let mut async_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut async_linker)?;
        host::v1::Filter::add_to_linker::<_, HasSelf<State>>(&mut async_linker, |state| state)?;
        host::v2::Filter::add_to_linker::<_, HasSelf<State>>(&mut async_linker, |state| state)?;

        let proxy_wasm = proxy_wasm::linker(&engine)?;

        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let settings = hasher.finish();

        let clock = Clock::start(&engine)?;
        let shared = Arc::default();
        let inner = EngineInner { engine, sync_linker, async_linker, proxy_wasm, clock, shared, cache_dir, settings };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Compiles a plugin module (or loads its compiled code from the cache) and links it.
    /// Fails if the bytes are not a component of the `filter` world or import what the
    /// gateway does not provide.
    /// A core module exporting `proxy_abi_version_0_2_1` (or `_0_2_0`) is a proxy-wasm filter.
    pub fn load(&self, name: &str, bytes: &[u8], limits: Limits) -> Result<Plugin, String> {
        let started = Instant::now();
        let hash = hex(&Sha256::digest(bytes));
        let limits = Limits { memory: limits.memory.min(MAX_MEMORY), ..limits };
        let abi = proxy_wasm::abi_version(bytes);
        let (kind, phases) = match abi {
            Some(_) => {
                let module = self
                    .compile::<wasmtime::Module>(&hash, bytes)
                    .map_err(|e| format!("not a loadable module: {e:#}"))?;
                let code = proxy_wasm::Code::new(&self.inner.proxy_wasm, &module)?;
                (Kind::ProxyWasm(code), Phases { request: true, response: true })
            }
            None => (Kind::Component(self.component(&hash, bytes)?), Phases::of(bytes)),
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let calls = match &kind {
            Kind::Component(code) if code.sync => "sync",
            Kind::Component(_) => "async",
            Kind::ProxyWasm(_) => "sync, proxy-wasm",
        };
        let contract = match &kind {
            Kind::Component(code) => Some(code.exports.version.as_str()),
            Kind::ProxyWasm(_) => None,
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            plugin = name,
            hash,
            calls,
            contract,
            abi,
            request = phases.request,
            response = phases.response,
            elapsed_ms,
            "loaded plugin"
        );
        Ok(Plugin {
            name: name.into(),
            hash,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limits,
            engine: self.clone(),
            kind,
            phases,
        })
    }

    /// A component of the `filter` world, linked.
    fn component(&self, hash: &str, bytes: &[u8]) -> Result<ComponentCode, String> {
        let component =
            self.compile::<Component>(hash, bytes).map_err(|e| format!("not a loadable component: {e:#}"))?;
        // Synchronous calls when the component needs no more WASI than `Wasi` offers.
        let (pre, sync) = match self.inner.sync_linker.instantiate_pre(&component) {
            Ok(pre) => (pre, true),
            Err(_) => match self.inner.async_linker.instantiate_pre(&component) {
                Ok(pre) => (pre, false),
                Err(e) => return Err(format!("cannot be linked: {e:#}")),
            },
        };
        let exports = Exports::of(&component, &pre)?;
        let engine = &self.inner.engine;
        let imports =
            |interface: &str| component.component_type().imports(engine).any(|(name, _)| name.starts_with(interface));
        let reads_bodies = imports("sluice:filter/body@");
        let waits = reads_bodies || imports("sluice:filter/http@");
        Ok(ComponentCode { pre, sync, waits, reads_bodies, exports })
    }

    /// Compiles `bytes` (a component or a core module, as `T` says), or loads the compiled
    /// code from the cache.
    fn compile<T: Compiled>(&self, hash: &str, bytes: &[u8]) -> wasmtime::Result<T> {
        let engine = &self.inner.engine;
        let Some(dir) = &self.inner.cache_dir else { return T::new(engine, bytes) };
        let path = dir.join(format!("{hash}-{:016x}.cwasm", self.inner.settings));
        if path.exists() {
            // SAFETY: the cache directory is the gateway's own (`--plugin-cache`): files in it
            // were written by `T::precompile` below for these engine settings, and the name
            // holds the hash of the bytes, so a module's file is never read as a component.
            match unsafe { T::deserialize_file(engine, &path) } {
                Ok(compiled) => return Ok(compiled),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unreadable compiled plugin: {e:#}"),
            }
        }
        let compiled = T::precompile(engine, bytes)?;
        if let Err(e) = write_atomic(dir, &path, &compiled) {
            tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
        }
        // SAFETY: `compiled` was just produced by this engine.
        unsafe { T::deserialize(engine, &compiled) }
    }

    /// A new store for `plugin`, with its memory cap.
    pub(crate) fn store(&self, plugin: &Plugin) -> Store<State> {
        let state = State::new(plugin.name.clone(), plugin.limits.memory, self.inner.shared.clone());
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|state| &mut state.limiter);
        // At the deadline a call stops, unless waiting for Services pushed its deadline back:
        // then it goes on until that.
        store.epoch_deadline_callback(|store| {
            let left = store.data().deadline_at.saturating_duration_since(Instant::now());
            match left.is_zero() {
                true => Err(wasmtime::Trap::Interrupt.into()),
                false => Ok(UpdateDeadline::Continue(deadline_ticks(left))),
            }
        });
        store
    }
}

/// Where a plugin's exports are, found once per load.
pub(crate) struct Exports {
    /// The contract version the component implements.
    pub version: Version,
    pub validate_config: ComponentExportIndex,
    pub on_request: ComponentExportIndex,
    pub on_response: ComponentExportIndex,
}

/// The versions of the contract a component may implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// `sluice:filter@0.1.0`: functions at the root, taking resources.
    V1,
    /// `sluice:filter@0.2.0`: the `handler` interface.
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "0.1.0",
            Self::V2 => "0.2.0",
        }
    }
}

impl Exports {
    /// The exports of `component`, of the version it implements (0.2 if it exports the
    /// `handler` interface); `pre` checks their types.
    fn of(component: &Component, pre: &InstancePre<State>) -> Result<Self, String> {
        let handler = component.get_export_index(None, host::HANDLER);
        let version = match handler {
            Some(_) => FilterIndicesV2::new(pre).map(|_| Version::V2),
            None => FilterIndicesV1::new(pre).map(|_| Version::V1),
        };
        let world = if handler.is_some() { "sluice:filter/filter@0.2.0" } else { "sluice:filter/filter@0.1.0" };
        let version = version.map_err(|e| format!("does not implement {world}: {e:#}"))?;
        let find = |name: &str| {
            component.get_export_index(handler.as_ref(), name).ok_or_else(|| format!("does not export {name}"))
        };
        Ok(Self {
            version,
            validate_config: find("validate-config")?,
            on_request: find("on-request")?,
            on_response: find("on-response")?,
        })
    }
}

/// The phases a filter implements; the gateway calls no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    pub request: bool,
    pub response: bool,
}

/// The custom section in which a filter lists its phases (the Rust SDK writes it): one byte,
/// bit 0 the request phase, bit 1 the response phase. Without it a filter has both.
const PHASES_SECTION: &str = "sluice:filter/phases";

impl Phases {
    /// The phases `bytes`, a component that compiled, declares.
    fn of(bytes: &[u8]) -> Self {
        let declared =
            wasmparser::Parser::new(0).parse_all(bytes).map_while(Result::ok).find_map(|payload| match payload {
                wasmparser::Payload::CustomSection(section) if section.name() == PHASES_SECTION => {
                    section.data().first().copied()
                }
                _ => None,
            });
        match declared {
            Some(bits) => Self { request: bits & 1 != 0, response: bits & 2 != 0 },
            None => Self { request: true, response: true },
        }
    }
}

/// Call deadlines in clock ticks: one more than the deadline, since the first tick may come
/// at once.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_micros().div_ceil(TICK.as_micros()) as u64).max(1) + 1
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded plugin module: compiled, linked and ready to instantiate.
pub struct Plugin {
    pub name: Arc<str>,
    /// SHA-256 of the module, hex.
    pub hash: String,
    /// Unique per load: instances of an older load of the same name are never reused.
    pub(crate) id: u64,
    pub limits: Limits,
    pub(crate) engine: Engine,
    pub(crate) kind: Kind,
    pub phases: Phases,
}

/// The two kinds of filter.
pub(crate) enum Kind {
    /// A component of the `sluice:filter/filter` world.
    Component(ComponentCode),
    /// A core module of the proxy-wasm ABI.
    ProxyWasm(proxy_wasm::Code),
}

/// A component, linked.
pub(crate) struct ComponentCode {
    pub pre: InstancePre<State>,
    /// Linked with synchronous WASI only: called with `call`, not `call_async`.
    pub sync: bool,
    /// Imports `http` or `body`: its calls may wait for Services or for bodies.
    pub waits: bool,
    /// Imports `body`: the bodies of its requests are lent to its phases.
    pub reads_bodies: bool,
    pub exports: Exports,
}

/// Compiled code of either kind, as the cache handles it.
trait Compiled: Sized {
    fn new(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `bytes` must come from `precompile` of an engine with the same settings.
    unsafe fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    /// # Safety
    /// As [`Compiled::deserialize`], for a file's contents.
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self>;
}

impl Compiled for Component {
    fn new(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Component::new(engine, bytes)
    }
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_component(bytes)
    }
    unsafe fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { Component::deserialize(engine, bytes) }
    }
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { Component::deserialize_file(engine, path) }
    }
}

impl Compiled for wasmtime::Module {
    fn new(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        wasmtime::Module::new(engine, bytes)
    }
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_module(bytes)
    }
    unsafe fn deserialize(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { wasmtime::Module::deserialize(engine, bytes) }
    }
    unsafe fn deserialize_file(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Self> {
        // SAFETY: as the caller promised.
        unsafe { wasmtime::Module::deserialize_file(engine, path) }
    }
}

impl Plugin {
    /// Whether calls into this plugin are plain function calls: it needs no more WASI than
    /// clocks, random numbers and stdout/stderr (proxy-wasm modules always are). Otherwise
    /// they run on a separate stack.
    pub fn calls_synchronously(&self) -> bool {
        match &self.kind {
            Kind::Component(code) => code.sync,
            Kind::ProxyWasm(_) => true,
        }
    }

    /// Whether this is a proxy-wasm filter rather than a component of our world.
    pub fn is_proxy_wasm(&self) -> bool {
        matches!(self.kind, Kind::ProxyWasm(_))
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("hash", &self.hash).finish_non_exhaustive()
    }
}
