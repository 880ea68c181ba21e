//! The linker a plugin is instantiated with: the `sluice:plugin/host`
//! interface, the harmless WASI interfaces every plugin gets, the real
//! implementation of each granted capability, and refusals for the
//! interfaces of ungranted ones (see the parent module for the policy).
//!
//! Invariant: an interface of an ungranted capability is never linked to
//! wasmtime-wasi's implementation; only the component's own imports of it
//! are defined, each function as a refusal and each resource as an opaque
//! type no value of which can ever exist.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, Linker, LinkerInstance, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{self, cli, clocks, filesystem, random, sockets};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::{ResourceTable, WasiView};

use super::{Capability, Need, Refused, WasiGrants, need_of};
use crate::plugin::host_api::HostState;

/// `wasi:io`'s view of a store: its resource table.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(state: &mut HostState) -> &mut ResourceTable {
    state.ctx().table
}

fn rng(state: &mut HostState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
    state.ctx().ctx.random()
}

/// Adds the WASI interfaces every plugin gets: `wasi:io/*`, `wasi:cli/*`,
/// `wasi:filesystem/*` (with no preopened directory) and `wasi:random/*`.
pub(in crate::plugin) fn add_always(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    filesystem::preopens::add_to_linker::<HostState, WasiFilesystem>(l, HostState::filesystem)?;
    bindings::sync::filesystem::types::add_to_linker::<HostState, WasiFilesystem>(
        l,
        HostState::filesystem,
    )?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, rng)?;
    bindings::sync::io::error::add_to_linker::<HostState, IoTable>(l, table)?;
    bindings::sync::io::poll::add_to_linker::<HostState, IoTable>(l, table)?;
    bindings::sync::io::streams::add_to_linker::<HostState, IoTable>(l, table)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// Adds the real interfaces of one granted capability.
fn add_granted(l: &mut Linker<HostState>, capability: Capability) -> wasmtime::Result<()> {
    match capability {
        Capability::Clocks => {
            clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
            clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
        }
        // Always linked: only what they return depends on these grants.
        Capability::Random | Capability::Environment => {}
        Capability::Network => {
            let options = bindings::sync::LinkOptions::default();
            let s = HostState::sockets;
            sockets::tcp_create_socket::add_to_linker::<HostState, WasiSockets>(l, s)?;
            sockets::instance_network::add_to_linker::<HostState, WasiSockets>(l, s)?;
            sockets::network::add_to_linker::<HostState, WasiSockets>(l, &(&options).into(), s)?;
            sockets::ip_name_lookup::add_to_linker::<HostState, WasiSockets>(l, s)?;
            bindings::sync::sockets::tcp::add_to_linker::<HostState, WasiSockets>(l, s)?;
            bindings::sync::sockets::udp::add_to_linker::<HostState, WasiSockets>(l, s)?;
            bindings::sync::sockets::udp_create_socket::add_to_linker::<HostState, WasiSockets>(
                l, s,
            )?;
        }
    }
    Ok(())
}

/// The linker for `component` under `grants`: `base` (host interface and
/// the harmless WASI interfaces) plus the granted capabilities, plus
/// refusals for the component's imports of ungranted ones.
pub(in crate::plugin) fn for_component(
    base: &Linker<HostState>,
    engine: &Engine,
    component: &Component,
    grants: WasiGrants,
) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = base.clone();
    for capability in grants.iter() {
        add_granted(&mut linker, capability)?;
    }
    for (name, item) in component.component_type().imports(engine) {
        let grant = match need_of(name) {
            Need::Grant(capability) if !grants.contains(capability) => capability,
            _ => continue,
        };
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let mut target = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            refuse(&mut target, name, export, &item.ty, grant)?;
        }
    }
    Ok(linker)
}

/// An opaque resource type for refused interfaces: no value of it is ever
/// created, since every function that could create one is refused.
struct RefusedResource;

/// The host type of a resource a refused interface exports. `wasi:io`'s
/// resources, which refused interfaces re-export (a clock's `pollable`, a
/// file's `input-stream`), must be the very types `wasi:io` is linked with;
/// the refused interfaces' own resources are opaque.
fn resource_type(name: &str) -> ResourceType {
    match name {
        "pollable" => ResourceType::host::<DynPollable>(),
        "input-stream" => ResourceType::host::<DynInputStream>(),
        "output-stream" => ResourceType::host::<DynOutputStream>(),
        "error" => ResourceType::host::<IoError>(),
        _ => ResourceType::host::<RefusedResource>(),
    }
}

fn refuse(
    target: &mut LinkerInstance<'_, HostState>,
    interface: &str,
    name: &str,
    item: &ComponentItem,
    grant: Capability,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let function = format!("{interface}#{name}");
            target.func_new(name, move |_: StoreContextMut<'_, HostState>, _, _, _| {
                Err(Refused {
                    function: function.clone(),
                    grant,
                }
                .into())
            })
        }
        ComponentItem::Resource(_) => target.resource(name, resource_type(name), |_, _| Ok(())),
        // Types other than resources need no definition.
        _ => Ok(()),
    }
}
