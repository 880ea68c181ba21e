//! Which world a component implements, and whether this host can run it.
//!
//! A component's world is recognised by its exports (`init` + `transform`,
//! or `init` + `encode`) and then confirmed by type-checking it against the
//! world's bindings, so a component whose functions have the right names but
//! the wrong types is refused before it is ever instantiated. Its imports
//! must be interfaces of `sluice:plugin` or of WASI 0.2; each WASI import is
//! linked as the plugin's grants say (see `wasi`), and anything else is
//! refused by name.

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use super::PluginError;
use super::host_api::HostState;
use super::wasi::{self, Capability, Need, WasiGrants};

/// The two worlds of `sluice:plugin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum World {
    Transform,
    Sink,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Transform => "transform",
            World::Sink => "sink",
        })
    }
}

/// What `sluice plugin inspect` reports about a component that this host
/// can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The world it implements (type-checked).
    pub world: World,
    /// Its imports, by name (e.g. `sluice:plugin/host@0.1.0`).
    pub imports: Vec<String>,
    /// Its exports, by name.
    pub exports: Vec<String>,
    /// The WASI capabilities its imports can use, when granted.
    pub capabilities: Vec<Capability>,
}

/// Finds the world of `component`, checks it against `expected` when given,
/// checks its imports, links it under `grants` (on top of `base`, the
/// linker with the host interface and the harmless WASI interfaces), and
/// type-checks it; returns what it found and the linked,
/// ready-to-instantiate component.
pub(super) fn check(
    engine: &Engine,
    base: &Linker<HostState>,
    plugin: &str,
    component: &Component,
    expected: Option<World>,
    grants: WasiGrants,
) -> Result<(Inspection, InstancePre<HostState>), PluginError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let has = |name: &str| exports.iter().any(|e| e == name);
    let world = match (has("init"), has("transform"), has("encode")) {
        (true, true, false) => World::Transform,
        (true, false, true) => World::Sink,
        _ => {
            return Err(PluginError::UnknownWorld {
                plugin: plugin.to_owned(),
                exports,
            });
        }
    };
    if let Some(expected) = expected
        && expected != world
    {
        return Err(PluginError::WrongWorld {
            plugin: plugin.to_owned(),
            expected,
            actual: world,
        });
    }

    let needs: Vec<Need> = imports.iter().map(|i| wasi::need_of(i)).collect();
    let unknown: Vec<String> = imports
        .iter()
        .zip(&needs)
        .filter(|(_, need)| **need == Need::Unknown)
        .map(|(import, _)| import.clone())
        .collect();
    if !unknown.is_empty() {
        return Err(PluginError::UnknownImports {
            plugin: plugin.to_owned(),
            imports: unknown,
        });
    }
    let mut capabilities: Vec<Capability> = needs
        .iter()
        .filter_map(|need| match need {
            Need::Grant(c) => Some(*c),
            _ => None,
        })
        .collect();
    capabilities.sort_unstable();
    capabilities.dedup();

    let mismatch = |source| PluginError::Mismatch {
        plugin: plugin.to_owned(),
        expected: world,
        source,
    };
    let linker = wasi::link::for_component(base, engine, component, grants).map_err(mismatch)?;
    let pre = linker.instantiate_pre(component).map_err(mismatch)?;
    Ok((
        Inspection {
            world,
            imports,
            exports,
            capabilities,
        },
        pre,
    ))
}
