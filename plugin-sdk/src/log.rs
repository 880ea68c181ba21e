//! Logging through the host.
//!
//! On WebAssembly a record goes to the host's `log` import, which tags it
//! with the plugin's name and writes it with the host's logs. Off
//! WebAssembly (native unit tests) it is written to standard error and
//! kept by [`crate::testing`] for the test to inspect.
//!
//! Never log row values that may hold personal data: logs are not
//! access-controlled like the stream.
//!
//! ```
//! use sluice_plugin_sdk::log;
//! let rows = 3;
//! log::info!("masked {rows} rows");
//! log::warn!(table = "users", column = "email"; "column not found");
//! ```

pub use crate::__bindings::transform::sluice::plugin::host::Level;

/// Writes a log record with structured `fields` (`(key, value)` pairs).
pub fn write(level: Level, message: &str, fields: &[(String, String)]) {
    #[cfg(target_arch = "wasm32")]
    crate::__bindings::transform::sluice::plugin::host::log(level, message, fields);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message, fields);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log {
    ($level:expr, $($key:ident = $value:expr),+ ; $($arg:tt)+) => {
        $crate::log::write(
            $level,
            &::std::format!($($arg)+),
            &[$((::std::string::String::from(::core::stringify!($key)), ::std::string::ToString::to_string(&$value))),+],
        )
    };
    ($level:expr, $($arg:tt)+) => {
        $crate::log::write($level, &::std::format!($($arg)+), &[])
    };
}

/// Logs at `trace` level: `trace!("text {x}")` or
/// `trace!(key = value, …; "text {x}")`.
#[macro_export]
macro_rules! __sluice_trace {
    ($($arg:tt)+) => { $crate::__sluice_log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs at `debug` level: `debug!("text {x}")` or
/// `debug!(key = value, …; "text {x}")`.
#[macro_export]
macro_rules! __sluice_debug {
    ($($arg:tt)+) => { $crate::__sluice_log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs at `info` level: `info!("text {x}")` or
/// `info!(key = value, …; "text {x}")`.
#[macro_export]
macro_rules! __sluice_info {
    ($($arg:tt)+) => { $crate::__sluice_log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs at `warn` level: `warn!("text {x}")` or
/// `warn!(key = value, …; "text {x}")`.
#[macro_export]
macro_rules! __sluice_warn {
    ($($arg:tt)+) => { $crate::__sluice_log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs at `error` level: `error!("text {x}")` or
/// `error!(key = value, …; "text {x}")`.
#[macro_export]
macro_rules! __sluice_error {
    ($($arg:tt)+) => { $crate::__sluice_log!($crate::log::Level::Error, $($arg)+) };
}

#[doc(inline)]
pub use crate::{
    __sluice_debug as debug, __sluice_error as error, __sluice_info as info,
    __sluice_trace as trace, __sluice_warn as warn,
};
