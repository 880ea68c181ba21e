//! Write Sluice transforms and sinks in Rust.
//!
//! A plugin is a type implementing [`Transform`] or [`Sink`], exported with
//! [`export_transform!`] or [`export_sink!`]:
//!
//! ```
//! use sluice_plugin_sdk::{Batch, Result, Transform};
//!
//! struct Passthrough;
//!
//! impl Transform for Passthrough {
//!     fn init(_config: &str) -> Result<Self> {
//!         Ok(Passthrough)
//!     }
//!
//!     fn transform(&mut self, batch: Batch) -> Result<Batch> {
//!         Ok(batch)
//!     }
//! }
//!
//! sluice_plugin_sdk::export_transform!(Passthrough);
//! ```
//!
//! The data types ([`Batch`], [`Event`], [`RowChange`], [`Value`]…) are the
//! ones generated from the WIT package `sluice:plugin@0.1.0` by wit-bindgen,
//! extended with helpers for reading and building rows; nothing is converted
//! on the way in or out. The generated bindings live in one hidden module
//! that only the export macros use.
//!
//! Plugins are unit-tested natively with `cargo test`: the same types and
//! traits work on every target, and off WebAssembly the host imports
//! ([`log`], [`counter`]) write to standard error and to an in-memory
//! recorder that tests read through [`testing`].
//!
//! On WebAssembly a panic aborts the call, which the host sees as a trap.
//! The export macros install a panic hook that first logs the panic's
//! message and location at error level, so that the host's error says
//! `plugin "mask" trapped: panicked at src/lib.rs:42:9: …` rather than only
//! that an `unreachable` instruction ran.

mod batch;
pub mod config;
pub mod counter;
#[cfg(feature = "envelope")]
pub mod envelope;
mod error;
pub mod log;
mod table_pattern;
pub mod temporal;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod value;

pub use batch::{Row, RowRef};
pub use table_pattern::TablePattern;

/// The wit-bindgen bindings of both worlds. Hidden: plugins use the
/// re-exports below and the export macros, never this module directly. The
/// `sink` world reuses the `types` and `host` interfaces generated for the
/// `transform` world, so both worlds share one set of Rust types.
#[doc(hidden)]
#[allow(
    unsafe_code,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod __bindings {
    pub mod transform {
        wit_bindgen::generate!({
            world: "transform",
            path: "../wit",
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "export_transform_world",
            default_bindings_module: "sluice_plugin_sdk::__bindings::transform",
        });
    }

    pub mod sink {
        wit_bindgen::generate!({
            world: "sink",
            path: "../wit",
            with: {
                "sluice:plugin/types@0.1.0": crate::__bindings::transform::sluice::plugin::types,
                "sluice:plugin/host@0.1.0": crate::__bindings::transform::sluice::plugin::host,
            },
            pub_export_macro: true,
            export_macro_name: "export_sink_world",
            default_bindings_module: "sluice_plugin_sdk::__bindings::sink",
        });
    }
}

pub use __bindings::transform::sluice::plugin::types::{
    BadInput, Batch, Column, Event, Interval, LogicalMessage, Lsn, Message, Operation, PluginError,
    Relation, ReplicaIdentity, RowChange, Truncate, Value,
};

/// The result of a plugin call.
pub type Result<T, E = PluginError> = core::result::Result<T, E>;

/// A plugin that reshapes batches (the WIT world `transform`).
///
/// The host creates one value per instance with [`Transform::init`] and then
/// calls [`Transform::transform`] with batches in commit order, one at a
/// time. State kept in `self` must not change the output for a given input:
/// after a restart the host replays transactions and expects the same
/// result.
pub trait Transform: Sized + 'static {
    /// Builds the plugin from its manifest table, given as JSON text (`{}`
    /// when there is none). See [`config::parse`].
    fn init(config: &str) -> Result<Self>;

    /// Returns the batch to pass on; an empty `events` list drops them all.
    fn transform(&mut self, batch: Batch) -> Result<Batch>;
}

/// A plugin that turns batches into NATS messages (the WIT world `sink`).
pub trait Sink: Sized + 'static {
    /// Builds the plugin from its manifest table, given as JSON text (`{}`
    /// when there is none). See [`config::parse`].
    fn init(config: &str) -> Result<Self>;

    /// Returns the messages for the batch, in publishing order.
    fn encode(&mut self, batch: Batch) -> Result<Vec<Message>>;
}

/// Glue between the export macros and the traits: keeps the one plugin value
/// of the instance between calls.
#[doc(hidden)]
pub mod __rt {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use crate::{Batch, Message, PluginError, Result, Sink, Transform};

    /// Where an instance keeps its plugin value. Instances are
    /// single-threaded, so a thread-local is the whole instance's state.
    pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

    fn not_initialised() -> PluginError {
        PluginError::Other("the host called the plugin before `init` succeeded".to_owned())
    }

    /// Makes a panic say what happened before it traps: installs (once per
    /// instance) a panic hook that logs `panicked at FILE:LINE:COL: MESSAGE`
    /// at error level through the host. A Wasm panic aborts, and the host
    /// only sees an `unreachable` trap; it attaches the last such message of
    /// the call to its trap error. Only on WebAssembly: native tests keep
    /// the standard hook.
    fn report_panics() {
        #[cfg(target_arch = "wasm32")]
        {
            static INSTALLED: std::sync::Once = std::sync::Once::new();
            INSTALLED.call_once(|| {
                std::panic::set_hook(Box::new(|info| {
                    crate::log::write(crate::log::Level::Error, &panic_message(info), &[]);
                }));
            });
        }
    }

    /// `panicked at FILE:LINE:COL: MESSAGE`, as Rust's own hook words it.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
        let message = info
            .payload_as_str()
            .unwrap_or("Box<dyn Any> (a panic with a non-text payload)");
        match info.location() {
            Some(at) => format!(
                "panicked at {}:{}:{}: {message}",
                at.file(),
                at.line(),
                at.column()
            ),
            None => format!("panicked: {message}"),
        }
    }

    pub fn init_transform<T: Transform>(slot: &'static Slot<T>, config: String) -> Result<()> {
        report_panics();
        let plugin = T::init(&config)?;
        slot.with(|cell| *cell.borrow_mut() = Some(plugin));
        Ok(())
    }

    pub fn run_transform<T: Transform>(slot: &'static Slot<T>, batch: Batch) -> Result<Batch> {
        slot.with(|cell| match cell.borrow_mut().as_mut() {
            Some(plugin) => plugin.transform(batch),
            None => Err(not_initialised()),
        })
    }

    pub fn init_sink<T: Sink>(slot: &'static Slot<T>, config: String) -> Result<()> {
        report_panics();
        let plugin = T::init(&config)?;
        slot.with(|cell| *cell.borrow_mut() = Some(plugin));
        Ok(())
    }

    pub fn run_sink<T: Sink>(slot: &'static Slot<T>, batch: Batch) -> Result<Vec<Message>> {
        slot.with(|cell| match cell.borrow_mut().as_mut() {
            Some(plugin) => plugin.encode(batch),
            None => Err(not_initialised()),
        })
    }
}

/// Exports a [`Transform`] implementation as the component's `transform`
/// world. Use it once per plugin crate.
///
/// Off WebAssembly it only checks that the type implements [`Transform`], so
/// the crate still builds and tests natively.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct SluiceTransformExport;

            impl $crate::__bindings::transform::Guest for SluiceTransformExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::PluginError> {
                    $crate::__rt::init_transform(&PLUGIN, config)
                }

                fn transform(
                    batch: $crate::Batch,
                ) -> ::core::result::Result<$crate::Batch, $crate::PluginError> {
                    $crate::__rt::run_transform(&PLUGIN, batch)
                }
            }

            $crate::__export_transform_impl!(
                SluiceTransformExport with_types_in $crate::__bindings::transform
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn assert_transform<T: $crate::Transform>() {}
            let _ = assert_transform::<$plugin>;
        };
    };
}

/// Exports a [`Sink`] implementation as the component's `sink` world. Use it
/// once per plugin crate.
///
/// Off WebAssembly it only checks that the type implements [`Sink`], so the
/// crate still builds and tests natively.
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct SluiceSinkExport;

            impl $crate::__bindings::sink::Guest for SluiceSinkExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), $crate::PluginError> {
                    $crate::__rt::init_sink(&PLUGIN, config)
                }

                fn encode(
                    batch: $crate::Batch,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Message>, $crate::PluginError>
                {
                    $crate::__rt::run_sink(&PLUGIN, batch)
                }
            }

    $crate::__export_sink_impl!(SluiceSinkExport with_types_in $crate::__bindings::sink);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn assert_sink<T: $crate::Sink>() {}
            let _ = assert_sink::<$plugin>;
        };
    };
}
