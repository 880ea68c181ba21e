//! Plugin instances: a [`Transform`] or [`Sink`] handle owns one live
//! instance of its component at a time, in a store of its own, and calls it
//! under the plugin's [`Limits`].
//!
//! Invariants:
//! - A live instance has been instantiated *and* `init`ed successfully.
//! - After a trap, a deadline, an exhausted memory cap or fuel, the instance
//!   (and its store, which is the only way to free its memory) is dropped,
//!   and the next call starts a fresh one from the [`InstancePre`] and
//!   `init`s it again. A plugin's own errors (`plugin-error` results) and
//!   invalid output leave the instance in place: it behaved, the input or
//!   the plugin's logic did not.
//! - Every guest call — instantiation, `init`, `transform`, `encode` — runs
//!   with a fresh epoch deadline (and fuel, when metered).
//!
//! Calls are synchronous: a plugin call is pure CPU work with no I/O to
//! overlap, so wasmtime's async support (fibers, a stack switch per call)
//! would add cost and buy nothing. The pipeline runs its plugin chain on a
//! blocking thread (`spawn_blocking` or a dedicated thread); the epoch
//! deadline bounds how long any call can hold that thread.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

use super::bindings::{self, wit};
use super::engine::Ticker;
use super::host_api::{Counters, HostState};
use super::limits::{Limits, MemoryCap};
use super::validate::{self, InvalidOutput, TransactionId};
use super::wasi::{Refused, WasiGrants};
use super::{CallError, PluginError};
use crate::model::{Batch, Message};

/// What the instance code needs to know about one world's bindings.
pub(super) trait WorldBindings: Sized + Send + 'static {
    type Pre: Clone + Send + Sync + 'static;

    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self>;
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), wit::PluginError>>;
}

/// The two worlds' generated bindings differ only in their names.
macro_rules! world_bindings {
    ($world:ty, $pre:ident) => {
        impl WorldBindings for $world {
            type Pre = bindings::$pre<HostState>;

            fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                bindings::$pre::new(pre)
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<HostState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate(store)
            }

            fn init(
                &self,
                store: &mut Store<HostState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), wit::PluginError>> {
                self.call_init(store, config)
            }
        }
    };
}

world_bindings!(bindings::Transform, TransformPre);
world_bindings!(bindings::Sink, SinkPre);

/// A compiled, type-checked plugin with its configuration and limits: the
/// factory of its instances.
pub(super) struct Prepared<B: WorldBindings> {
    pub(super) plugin: Arc<str>,
    pub(super) engine: Engine,
    pub(super) pre: B::Pre,
    pub(super) config: Arc<str>,
    pub(super) limits: Limits,
    pub(super) wasi: WasiGrants,
    pub(super) tick: Duration,
    pub(super) counters: Counters,
    /// Keeps the epoch ticker running while any instance may still run,
    /// even if the `PluginRuntime` itself is gone: without it no deadline
    /// would ever fire.
    pub(super) ticker: Arc<Ticker>,
}

impl<B: WorldBindings> Clone for Prepared<B> {
    fn clone(&self) -> Self {
        Prepared {
            plugin: Arc::clone(&self.plugin),
            engine: self.engine.clone(),
            pre: self.pre.clone(),
            config: Arc::clone(&self.config),
            limits: self.limits,
            wasi: self.wasi,
            tick: self.tick,
            counters: self.counters.clone(),
            ticker: Arc::clone(&self.ticker),
        }
    }
}

struct Live<B> {
    store: Store<HostState>,
    bindings: B,
}

impl<B: WorldBindings> Prepared<B> {
    /// Gives a store a fresh deadline (and fuel) for the next guest call.
    fn arm(&self, store: &mut Store<HostState>) {
        store.set_epoch_deadline(self.limits.deadline_ticks(self.tick));
        if let Some(fuel) = self.limits.fuel {
            // Fuel is known to be enabled: `PluginRuntime` checked when
            // preparing the plugin.
            let _ = store.set_fuel(fuel);
        }
        let state = store.data_mut();
        state.memory = MemoryCap::new(self.limits.memory);
        state.panic = None;
    }

    /// Instantiates and initialises a new instance.
    fn start(&self) -> Result<Live<B>, PluginError> {
        let state = HostState::new(
            Arc::clone(&self.plugin),
            self.counters.clone(),
            MemoryCap::new(self.limits.memory),
            self.wasi,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        store.epoch_deadline_trap();

        self.arm(&mut store);
        let bindings = B::instantiate(&self.pre, &mut store).map_err(|e| {
            if e.downcast_ref::<Trap>().is_some() {
                self.classify(&store, e)
            } else {
                PluginError::Instantiate {
                    plugin: self.plugin.to_string(),
                    source: e,
                }
            }
        })?;

        self.arm(&mut store);
        match bindings.init(&mut store, &self.config) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(e)) => Err(self.guest_error(e, true)),
            Err(e) => Err(self.classify(&store, e)),
        }
    }

    /// The error a plugin returned; from `init` (`in_init`), anything but a
    /// bad configuration is a failed initialisation.
    fn guest_error(&self, e: wit::PluginError, in_init: bool) -> PluginError {
        let plugin = self.plugin.to_string();
        match e {
            wit::PluginError::BadConfig(message) => PluginError::BadConfig { plugin, message },
            wit::PluginError::BadInput(bad) if !in_init => PluginError::BadInput {
                plugin,
                event_index: bad.event_index,
                message: bad.message,
            },
            wit::PluginError::BadInput(bad) => PluginError::InitFailed {
                plugin,
                message: bad.message,
            },
            wit::PluginError::Other(message) if in_init => {
                PluginError::InitFailed { plugin, message }
            }
            wit::PluginError::Other(message) => PluginError::Failed { plugin, message },
        }
    }

    /// Turns a failed guest call into the error the user should see: the
    /// limit that stopped it, or the trap itself.
    fn classify(&self, store: &Store<HostState>, e: wasmtime::Error) -> PluginError {
        let plugin = self.plugin.to_string();
        if store.data().memory.was_hit() {
            return PluginError::MemoryLimit {
                plugin,
                limit: self.limits.memory,
            };
        }
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return PluginError::NotGranted {
                plugin,
                refused: refused.clone(),
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Deadline {
                plugin,
                deadline: self.limits.deadline,
            },
            Some(Trap::OutOfFuel) => PluginError::OutOfFuel {
                plugin,
                fuel: self.limits.fuel.unwrap_or(0),
            },
            // A Rust panic ends in an `unreachable` trap, which says nothing
            // useful; the panic message the SDK logged just before says
            // what went wrong and where.
            Some(Trap::UnreachableCodeReached) if store.data().panic.is_some() => {
                PluginError::Trapped {
                    plugin,
                    trap: store.data().panic.clone().unwrap_or_default(),
                    source: e,
                }
            }
            // `Trap`'s text starts with "wasm trap: ", which the error's own
            // wording ("trapped: …") already says.
            Some(trap) => PluginError::Trapped {
                plugin,
                trap: trap
                    .to_string()
                    .trim_start_matches("wasm trap: ")
                    .to_owned(),
                source: e,
            },
            // Not a trap: the guest handed back something the canonical ABI
            // cannot lift (a bad pointer, invalid UTF-8…). Just as fatal for
            // the instance.
            None => PluginError::Trapped {
                plugin,
                trap: e.to_string(),
                source: e,
            },
        }
    }
}

/// One plugin's live instance, replaced after a fatal failure.
struct Slot<B: WorldBindings> {
    prepared: Prepared<B>,
    live: Option<Live<B>>,
    started: u64,
}

impl<B: WorldBindings> Slot<B> {
    fn new(prepared: Prepared<B>) -> Result<Self, PluginError> {
        let live = prepared.start()?;
        Ok(Slot {
            prepared,
            live: Some(live),
            started: 1,
        })
    }

    /// Calls the guest with `batch` through `call` and checks its output
    /// with `check`. The guest only borrows the input: on failure it goes
    /// back to the caller (a move, not a copy) for the error policy to
    /// split or dead-letter.
    fn call_checked<R, T>(
        &mut self,
        batch: Batch,
        call: impl FnOnce(
            &B,
            &mut Store<HostState>,
            &wit::Batch,
        ) -> wasmtime::Result<Result<R, wit::PluginError>>,
        check: impl FnOnce(R) -> Result<T, InvalidOutput>,
    ) -> Result<T, CallError> {
        let input = wit::Batch::from(batch);
        let error = match self.call(|b, store| call(b, store, &input)).map(check) {
            Ok(Ok(output)) => return Ok(output),
            Ok(Err(invalid)) => PluginError::InvalidOutput {
                plugin: self.prepared.plugin.to_string(),
                error: invalid,
            },
            Err(error) => error,
        };
        Err(CallError {
            error,
            input: Box::new(input.into()),
        })
    }

    /// Calls the guest through `f` on the live instance, starting one first
    /// if the last was dropped.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&B, &mut Store<HostState>) -> wasmtime::Result<Result<R, wit::PluginError>>,
    ) -> Result<R, PluginError> {
        let live = match &mut self.live {
            Some(live) => live,
            None => {
                let live = self.prepared.start()?;
                self.started += 1;
                self.live.insert(live)
            }
        };
        self.prepared.arm(&mut live.store);
        match f(&live.bindings, &mut live.store) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.prepared.guest_error(e, false)),
            Err(e) => {
                let error = self.prepared.classify(&live.store, e);
                tracing::warn!(plugin = &*self.prepared.plugin, %error, "dropping the plugin instance; the next call starts a fresh one");
                self.live = None;
                Err(error)
            }
        }
    }
}

/// A transform plugin, compiled and type-checked: makes [`Transform`]s.
#[derive(Clone)]
pub struct TransformPlugin(pub(super) Prepared<bindings::Transform>);

/// A sink plugin, compiled and type-checked: makes [`Sink`]s.
#[derive(Clone)]
pub struct SinkPlugin(pub(super) Prepared<bindings::Sink>);

/// What a compiled plugin (`$plugin`) and its live handle (`$live`) offer
/// whatever their world: names, instantiation, the instance count.
macro_rules! plugin_handles {
    ($plugin:ident, $live:ident) => {
        impl $plugin {
            /// The plugin's name, as errors and logs call it.
            pub fn name(&self) -> &str {
                &self.0.plugin
            }

            /// A new instance, initialised with the plugin's configuration.
            pub fn instantiate(&self) -> Result<$live, PluginError> {
                Ok($live {
                    slot: Slot::new(self.0.clone())?,
                })
            }
        }

        impl std::fmt::Debug for $plugin {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($plugin))
                    .field("name", &self.name())
                    .field("limits", &self.0.limits)
                    .finish()
            }
        }

        impl std::fmt::Debug for $live {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($live))
                    .field("name", &self.name())
                    .field("live", &self.slot.live.is_some())
                    .finish()
            }
        }

        impl $live {
            /// The plugin's name.
            pub fn name(&self) -> &str {
                &self.slot.prepared.plugin
            }

            /// How many instances this handle has started (1 + replacements).
            pub fn instances_started(&self) -> u64 {
                self.slot.started
            }
        }
    };
}

plugin_handles!(TransformPlugin, Transform);
plugin_handles!(SinkPlugin, Sink);

/// A live transform: call [`Transform::transform`] with each batch, in order.
pub struct Transform {
    slot: Slot<bindings::Transform>,
}

impl Transform {
    /// Passes one batch through the plugin and checks what comes back.
    pub fn transform(&mut self, batch: Batch) -> Result<Batch, CallError> {
        let id = TransactionId::of(&batch);
        self.slot.call_checked(
            batch,
            |b, store, input| b.call_transform(store, input),
            |output| {
                let output = Batch::from(output);
                validate::check(id, &output).map(|()| output)
            },
        )
    }
}

/// A live sink: call [`Sink::encode`] with each batch, in order.
pub struct Sink {
    slot: Slot<bindings::Sink>,
}

impl Sink {
    /// Turns one batch into the messages to publish, in order.
    pub fn encode(&mut self, batch: Batch) -> Result<Vec<Message>, CallError> {
        let count = batch.events.len();
        self.slot.call_checked(
            batch,
            |b, store, input| b.call_encode(store, input),
            |output| {
                let messages: Vec<Message> = output.into_iter().map(Message::from).collect();
                validate::check_messages(count, &messages).map(|()| messages)
            },
        )
    }
}
