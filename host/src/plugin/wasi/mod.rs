//! WASI for plugins: which capabilities a manifest may grant, what each
//! import of a component needs, and the per-instance [`WasiCtx`] built from
//! the grants.
//!
//! Components made by componentize-py and componentize-js import every
//! WASI 0.2 interface whether their code uses it or not, so an import alone
//! says little. The host therefore links every WASI 0.2 interface, in one of
//! three ways (see [`link`]):
//!
//! - *harmless, always*: `wasi:io/*`, `wasi:cli/*`, `wasi:filesystem/*` and
//!   `wasi:random/*` — standard output and error go to the host's log
//!   tagged with the plugin's name ([`stdio`]), standard input is empty,
//!   there is no terminal, the environment and arguments are empty (unless
//!   `environment` is granted), `exit` ends the instance like a trap, the
//!   file system has no preopened directory (so nothing can be opened:
//!   SpiderMonkey and CPython list the directories when they start, and
//!   find none), and random bytes are a fixed, repeatable sequence (unless
//!   `random` is granted): CPython reads a few to seed its hash tables
//!   before any plugin code runs, and a fixed seed keeps a transform
//!   deterministic, so that a replay produces the same messages;
//! - *granted*: the real implementation, when the plugin's manifest entry
//!   lists the capability (`wasi = ["clocks", "random", "environment",
//!   "network"]`);
//! - *refused*: every function of an ungranted capability's interfaces
//!   fails the call with [`Refused`], which names the function and the
//!   grant that would allow it (the runtime's error adds the plugin). A
//!   plugin that does this in `init` fails at load.
//!
//! Invariant: nothing is granted implicitly. No directory is preopened, no
//! environment variable or socket is inherited, no clock or entropy is
//! readable unless the plugin's grants say so; imports outside WASI 0.2 and
//! `sluice:plugin` are refused at load.

pub(super) mod link;
mod stdio;

use std::fmt;
use std::sync::Arc;

use wasmtime_wasi::{Deterministic, WasiCtx, WasiCtxBuilder};

/// A WASI capability a manifest can grant a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `wasi:clocks/*`: the wall clock and the monotonic clock.
    Clocks,
    /// `wasi:random/*` returns the host's entropy (otherwise a fixed,
    /// repeatable sequence).
    Random,
    /// `wasi:cli/environment` returns the host process's environment
    /// variables (otherwise it returns none).
    Environment,
    /// `wasi:sockets/*`: TCP, UDP and name lookups, to any address.
    Network,
}

impl Capability {
    /// Every capability, in the order they are listed to users.
    pub const ALL: [Capability; 4] = [
        Capability::Clocks,
        Capability::Random,
        Capability::Environment,
        Capability::Network,
    ];

    /// The name the manifest uses.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Clocks => "clocks",
            Capability::Random => "random",
            Capability::Environment => "environment",
            Capability::Network => "network",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Capability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(c) = Capability::ALL.into_iter().find(|c| c.name() == s) {
            return Ok(c);
        }
        let hint = if matches!(s, "filesystem" | "fs" | "files") {
            " (Sluice never grants a file system to plugins: no directory is preopened)"
        } else {
            ""
        };
        Err(format!(
            "`{s}` is not a WASI capability: use \"clocks\", \"random\", \"environment\" or \"network\"{hint}"
        ))
    }
}

/// The capabilities granted to one plugin; empty by default.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WasiGrants(u8);

impl WasiGrants {
    /// No capability at all.
    pub const NONE: WasiGrants = WasiGrants(0);

    /// These grants plus `capability`.
    #[must_use]
    pub fn with(self, capability: Capability) -> Self {
        WasiGrants(self.0 | capability.bit())
    }

    pub fn contains(self, capability: Capability) -> bool {
        self.0 & capability.bit() != 0
    }

    /// The granted capabilities, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// Parses the manifest's list of capability names.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        names.iter().try_fold(WasiGrants::NONE, |grants, name| {
            Ok(grants.with(name.as_ref().parse()?))
        })
    }
}

impl fmt::Debug for WasiGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What one import of a component needs from the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// An interface of `sluice:plugin`.
    Own,
    /// A WASI interface every plugin gets (harmless implementations).
    Always,
    /// A WASI interface of a grantable capability.
    Grant(Capability),
    /// Anything else: the component cannot be run by this host.
    Unknown,
}

/// Classifies an import by its name, e.g. `wasi:clocks/wall-clock@0.2.9`.
/// Only WASI 0.2.x interfaces are known.
pub fn need_of(import: &str) -> Need {
    if import.starts_with("sluice:plugin/") {
        return Need::Own;
    }
    let Some((interface, version)) = import.split_once('@') else {
        return Need::Unknown;
    };
    if !version.starts_with("0.2.") {
        return Need::Unknown;
    }
    match interface {
        "wasi:io/error" | "wasi:io/poll" | "wasi:io/streams" => Need::Always,
        "wasi:cli/environment"
        | "wasi:cli/exit"
        | "wasi:cli/stdin"
        | "wasi:cli/stdout"
        | "wasi:cli/stderr"
        | "wasi:cli/terminal-input"
        | "wasi:cli/terminal-output"
        | "wasi:cli/terminal-stdin"
        | "wasi:cli/terminal-stdout"
        | "wasi:cli/terminal-stderr" => Need::Always,
        "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" => Need::Grant(Capability::Clocks),
        "wasi:random/random" | "wasi:random/insecure" | "wasi:random/insecure-seed" => Need::Always,
        "wasi:sockets/network"
        | "wasi:sockets/instance-network"
        | "wasi:sockets/tcp"
        | "wasi:sockets/tcp-create-socket"
        | "wasi:sockets/udp"
        | "wasi:sockets/udp-create-socket"
        | "wasi:sockets/ip-name-lookup" => Need::Grant(Capability::Network),
        // No directory is ever preopened, so no file can be reached.
        "wasi:filesystem/types" | "wasi:filesystem/preopens" => Need::Always,
        _ => Need::Unknown,
    }
}

/// The error a refused WASI function fails its call with: the plugin used a
/// capability it was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The function, e.g. `wasi:sockets/tcp-create-socket@0.2.9#create-tcp-socket`.
    pub function: String,
    /// The grant that would allow it.
    pub grant: Capability,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grant = self.grant;
        write!(
            f,
            "called {} without the \"{grant}\" WASI grant: add \"{grant}\" to the `wasi` list of its manifest entry",
            self.function
        )
    }
}

impl std::error::Error for Refused {}

/// What ungranted `wasi:random` returns, over and over: bytes that look
/// random to a hash-table seeding routine (not all zero, which some reject)
/// and are the same in every instance and every release.
const FIXED_RANDOM: [u8; 32] = *b"sluice: not random, by design!!\n";
const FIXED_SEED: u128 = u128::from_le_bytes(*b"sluice fixed sd!");

/// The WASI context of one instance: standard output and error to the log,
/// and only what `grants` allow.
pub(super) fn context(plugin: &Arc<str>, grants: WasiGrants) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdio::LogStream::stdout(Arc::clone(plugin)))
        .stderr(stdio::LogStream::stderr(Arc::clone(plugin)));
    if grants.contains(Capability::Environment) {
        builder.inherit_env();
    }
    if !grants.contains(Capability::Random) {
        builder
            .secure_random(Deterministic::new(FIXED_RANDOM.to_vec()))
            .insecure_random(Deterministic::new(FIXED_RANDOM.to_vec()))
            .insecure_random_seed(FIXED_SEED);
    }
    if grants.contains(Capability::Network) {
        // wasmtime-wasi allows neither TCP nor UDP by default.
        builder
            .inherit_network()
            .allow_ip_name_lookup(true)
            .allow_tcp(true)
            .allow_udp(true);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_classified_by_interface_and_version() {
        assert_eq!(need_of("sluice:plugin/host@0.1.0"), Need::Own);
        assert_eq!(need_of("wasi:io/streams@0.2.9"), Need::Always);
        assert_eq!(need_of("wasi:cli/stdout@0.2.0"), Need::Always);
        assert_eq!(
            need_of("wasi:clocks/wall-clock@0.2.9"),
            Need::Grant(Capability::Clocks)
        );
        assert_eq!(
            need_of("wasi:sockets/tcp@0.2.3"),
            Need::Grant(Capability::Network)
        );
        assert_eq!(need_of("wasi:random/random@0.2.9"), Need::Always);
        assert_eq!(need_of("wasi:filesystem/preopens@0.2.9"), Need::Always);
        assert_eq!(need_of("wasi:http/types@0.2.9"), Need::Unknown);
        assert_eq!(need_of("wasi:clocks/wall-clock@0.3.0"), Need::Unknown);
        assert_eq!(need_of("wasi:io/streams"), Need::Unknown);
    }

    #[test]
    fn grants_parse_with_clear_errors() {
        let grants = WasiGrants::parse(&["random", "clocks", "random"]).unwrap();
        assert_eq!(
            grants.iter().collect::<Vec<_>>(),
            [Capability::Clocks, Capability::Random]
        );
        assert!(!grants.contains(Capability::Network));
        assert_eq!(
            WasiGrants::parse(&["filesystem"]).unwrap_err(),
            "`filesystem` is not a WASI capability: use \"clocks\", \"random\", \"environment\" or \"network\" (Sluice never grants a file system to plugins: no directory is preopened)"
        );
    }
}
