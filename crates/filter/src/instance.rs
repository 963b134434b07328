//! Instances of a plugin: making them, calling into them under a deadline, and keeping idle
//! ones per worker thread for reuse.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{Resource, TypedFunc};

use crate::engine::{Kind, Plugin, START_DEADLINE, Version, deadline_ticks};
use crate::failure::{FailureKind, FilterFailure};
use crate::host::{Action, RequestHandle, ResponseHandle, State, v2};
use crate::idle::IdlePool;

/// A live instance of a plugin.
pub(crate) struct Live {
    store: Store<State>,
    validate_config: TypedFunc<(String,), (Result<(), String>,)>,
    phases: PhaseFuncs,
    /// Called with `call` rather than `call_async`: the plugin needs no asynchronous WASI.
    sync: bool,
    plugin: Arc<str>,
}

/// The phase exports, typed as the component's contract version has them.
enum PhaseFuncs {
    V1 {
        on_request: TypedFunc<(Resource<RequestHandle>,), (Action,)>,
        on_response: TypedFunc<(Resource<ResponseHandle>,), ()>,
    },
    V2 {
        on_request: TypedFunc<(), (v2::sluice::filter::types::Action,)>,
        on_response: TypedFunc<(), ()>,
    },
}

impl Live {
    /// A new instance; start-up code runs under `deadline`.
    pub async fn new(plugin: &Plugin, deadline: Duration) -> Result<Self, FilterFailure> {
        let Kind::Component(code) = &plugin.kind else {
            return Err(FilterFailure::new(&plugin.name, FailureKind::Unavailable, "not a component"));
        };
        let mut store = plugin.engine.store(plugin);
        store.set_epoch_deadline(deadline_ticks(deadline));
        store.data_mut().start_deadline(deadline);
        let started = {
            let _ticking = plugin.engine.clock().ticking();
            match code.sync {
                true => code.pre.instantiate(&mut store),
                false => code.pre.instantiate_async(&mut store).await,
            }
        };
        let exports = started.and_then(|instance| {
            let exports = &code.exports;
            let (request, response) = (exports.on_request, exports.on_response);
            let phases = match exports.version {
                Version::V1 => PhaseFuncs::V1 {
                    on_request: instance.get_typed_func(&mut store, request)?,
                    on_response: instance.get_typed_func(&mut store, response)?,
                },
                Version::V2 => PhaseFuncs::V2 {
                    on_request: instance.get_typed_func(&mut store, request)?,
                    on_response: instance.get_typed_func(&mut store, response)?,
                },
            };
            Ok((instance.get_typed_func(&mut store, exports.validate_config)?, phases))
        });
        match exports {
            Ok((validate_config, phases)) => {
                Ok(Self { store, validate_config, phases, sync: code.sync, plugin: plugin.name.clone() })
            }
            Err(e) => Err(FilterFailure::of(&plugin.name, &e, &store.data().limiter)),
        }
    }

    pub fn state(&mut self) -> &mut State {
        self.store.data_mut()
    }

    /// Runs the plugin's check of an attachment's configuration.
    pub async fn validate_config(
        &mut self,
        plugin: &Plugin,
        deadline: Duration,
        config: &str,
    ) -> Result<Result<(), String>, FilterFailure> {
        let func = self.validate_config;
        self.call(plugin, deadline, func, (config.to_owned(),)).await.map(|(result,)| result)
    }

    /// Runs the request phase on the request in the store's call.
    pub async fn on_request(&mut self, plugin: &Plugin) -> Result<Action, FilterFailure> {
        let deadline = plugin.limits.deadline;
        match self.phases {
            PhaseFuncs::V1 { on_request, .. } => {
                self.call(plugin, deadline, on_request, (Resource::new_borrow(0),)).await.map(|(action,)| action)
            }
            PhaseFuncs::V2 { on_request, .. } => {
                self.call(plugin, deadline, on_request, ()).await.map(|(action,)| action.into())
            }
        }
    }

    /// Runs the response phase on the response in the store's call.
    pub async fn on_response(&mut self, plugin: &Plugin) -> Result<(), FilterFailure> {
        let deadline = plugin.limits.deadline;
        match self.phases {
            PhaseFuncs::V1 { on_response, .. } => {
                self.call(plugin, deadline, on_response, (Resource::new_borrow(0),)).await
            }
            PhaseFuncs::V2 { on_response, .. } => self.call(plugin, deadline, on_response, ()).await,
        }
    }

    async fn call<P, R>(
        &mut self,
        plugin: &Plugin,
        deadline: Duration,
        func: TypedFunc<P, R>,
        params: P,
    ) -> Result<R, FilterFailure>
    where
        P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
        R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync + 'static,
    {
        self.store.set_epoch_deadline(deadline_ticks(deadline));
        self.store.data_mut().start_deadline(deadline);
        let result = {
            let _ticking = plugin.engine.clock().ticking();
            match self.sync {
                true => func.call(&mut self.store, params),
                false => Box::pin(func.call_async(&mut self.store, params)).await,
            }
        };
        self.store.data_mut().wasi.end_call();
        result.map_err(|e| FilterFailure::of(&self.plugin, &e, &self.store.data().limiter))
    }
}

impl Plugin {
    /// Runs the plugin's own check of an attachment's configuration, in a fresh instance.
    /// It runs off the request path, when configuration loads, so it gets [`START_DEADLINE`]
    /// at least: a busy machine must not turn a slow start-up into a rejected configuration.
    pub async fn validate_config(&self, config: &str) -> Result<(), String> {
        if let Kind::ProxyWasm(code) = &self.kind {
            return code.validate_config(self, config);
        }
        let deadline = self.limits.deadline.max(START_DEADLINE);
        let failed = |failure: FilterFailure| format!("the plugin {} while checking it", failure.kind);
        let mut live = Live::new(self, deadline).await.map_err(failed)?;
        live.validate_config(self, deadline, config).await.map_err(failed)?
    }
}

/// Instances kept per plugin per thread. Calls on a worker thread take an instance out for
/// the call, so an instance serves one request at a time; more than one is only needed while
/// a call waits (a guest blocked in asynchronous WASI).
const MAX_IDLE: usize = 4;

/// Instances kept per plugin per thread when the plugin calls Services or reads bodies: each
/// request waiting for an answer (or a body) holds one, so as many are needed as such requests
/// are in flight on a thread. Without them, every request past a few would pay for a new
/// instance.
const MAX_IDLE_WAITING: usize = 64;

thread_local! {
    static IDLE: RefCell<IdlePool<Live>> = RefCell::new(IdlePool::new());
}

/// An idle instance of `plugin` on this thread, if there is one.
pub(crate) fn checkout(plugin: &Arc<Plugin>) -> Option<Live> {
    IDLE.with_borrow_mut(|idle| idle.take(plugin))
}

/// Keeps `live`, an instance of `plugin` whose last call succeeded, for reuse on this thread.
pub(crate) fn checkin(plugin: &Arc<Plugin>, live: Live) {
    let max = match &plugin.kind {
        Kind::Component(code) if code.waits => MAX_IDLE_WAITING,
        _ => MAX_IDLE,
    };
    IDLE.with_borrow_mut(|idle| idle.keep(plugin, live, max));
}

/// A new instance for a request's call: start-up code gets [`START_DEADLINE`] at least.
pub(crate) async fn start(plugin: &Plugin) -> Result<Live, FilterFailure> {
    Live::new(plugin, plugin.limits.deadline.max(START_DEADLINE)).await
}
