//! What a plugin logged and counted, for native unit tests.
//!
//! Off WebAssembly there is no host: [`crate::log`] and [`crate::counter`]
//! record here instead, per thread, so tests running in parallel (each on
//! its own thread, as `cargo test` does) never see each other's records.
//! Log records are also written to standard error, which `cargo test`
//! shows for failing tests.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::log::Level;

/// One log record written by the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

#[derive(Default)]
struct Recorder {
    logs: Vec<LogRecord>,
    counters: BTreeMap<String, u64>,
}

thread_local! {
    static RECORDER: RefCell<Recorder> = RefCell::new(Recorder::default());
}

pub(crate) fn record_log(level: Level, message: &str, fields: &[(String, String)]) {
    let mut line = format!("[plugin {level:?}] {message}");
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    eprintln!("{line}");
    RECORDER.with(|recorder| {
        recorder.borrow_mut().logs.push(LogRecord {
            level,
            message: message.to_owned(),
            fields: fields.to_vec(),
        });
    });
}

pub(crate) fn record_counter(name: &str, delta: u64) {
    RECORDER.with(|recorder| {
        let mut recorder = recorder.borrow_mut();
        let total = recorder.counters.entry(name.to_owned()).or_default();
        *total = total.saturating_add(delta);
    });
}

/// The log records written on this thread, oldest first.
pub fn logs() -> Vec<LogRecord> {
    RECORDER.with(|recorder| recorder.borrow().logs.clone())
}

/// The total of counter `name` on this thread (0 when never added to).
pub fn counter(name: &str) -> u64 {
    RECORDER.with(|recorder| recorder.borrow().counters.get(name).copied().unwrap_or(0))
}

/// Every counter added to on this thread, by name.
pub fn counters() -> BTreeMap<String, u64> {
    RECORDER.with(|recorder| recorder.borrow().counters.clone())
}

/// Forgets this thread's log records and counters.
pub fn reset() {
    RECORDER.with(|recorder| *recorder.borrow_mut() = Recorder::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_and_counters_are_recorded() {
        reset();
        crate::log::info!(table = "users", rows = 2; "masked {} rows", 2);
        crate::log::debug!("plain");
        crate::counter::add("rows_masked", 2);
        crate::counter::add("rows_masked", 3);
        crate::counter::add("never", 0);
        assert_eq!(
            logs(),
            vec![
                LogRecord {
                    level: Level::Info,
                    message: "masked 2 rows".into(),
                    fields: vec![
                        ("table".into(), "users".into()),
                        ("rows".into(), "2".into())
                    ],
                },
                LogRecord {
                    level: Level::Debug,
                    message: "plain".into(),
                    fields: vec![]
                },
            ]
        );
        assert_eq!(counter("rows_masked"), 5);
        assert_eq!(counters().len(), 1);
    }
}
