//! The `sluice` binary: parses the command line, sets up logging to stderr,
//! runs the command, and turns an error into a message and exit status 1.

mod cli;

/// mimalloc rather than glibc's malloc: see the workspace's Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use sluice_host::causes;
use sluice_host::plugin::{CallError, PluginError};
use tracing_subscriber::EnvFilter;

/// Asks Linux not to back this process with transparent huge pages.
///
/// mimalloc asks for huge pages for its arenas, and a 2 MiB page counts in
/// full as soon as one byte of it is touched: on the pgbench backlog that
/// doubled the peak RSS (108–124 MB against 53–57 MB without) for no
/// measurable gain in CPU or rate (scripts/bench-oltp, README
/// "Performance"). The flag covers every later page fault of the process,
/// whatever the system's THP setting; it is a hint, so a kernel that
/// refuses it changes nothing but the figure.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn main() -> ExitCode {
    without_huge_pages();
    let cli = cli::Cli::parse();
    // SLUICE_LOG overrides the manifest's level; the manifest chooses the
    // format (human or JSON lines).
    let log = cli.log_settings();
    let level = log
        .as_ref()
        .map_or(cli.default_log_level(), |l| l.level.as_str());
    // The NATS client's own connection chatter repeats what Sluice logs.
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_new(format!("{level},async_nats=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: redirected logs stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    if log.is_some_and(|l| l.format == sluice_host::config::LogFormat::Json) {
        builder.json().init();
    } else {
        builder.init();
    }
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The first line tells the whole story: where (batch, flag,
            // file) and what (the plugin's error). Deeper causes, such as a
            // trap's Wasm backtrace, follow on their own lines.
            // Each cause once: many errors already quote their cause.
            let mut causes = causes::distinct(error.as_ref()).into_iter();
            let mut first = Vec::new();
            for (cause, text) in causes.by_ref() {
                first.push(text);
                if cause.is::<PluginError>() || cause.is::<CallError>() {
                    break;
                }
            }
            eprintln!("error: {}", first.join(": "));
            for (_, text) in causes {
                eprintln!("  caused by: {text}");
            }
            ExitCode::FAILURE
        }
    }
}
