//! Host bindings generated from `wit/v0.3/operator.wit`.

wasmtime::component::bindgen!({
    path: "../wit/v0.3",
    world: "weir:operator/operator@0.3.0",
    with: {
        "weir:operator/state.value-state": crate::plugin::host::StateHandle,
        "weir:operator/state.list-state": crate::plugin::host::StateHandle,
        "weir:operator/state.map-state": crate::plugin::host::StateHandle,
        "weir:operator/operator-state.list-state": crate::plugin::host::OperatorListHandle,
        "weir:operator/operator-state.broadcast-state": crate::plugin::host::BroadcastHandle,
    },
    // Every host function can trap: misuse of the contract by the guest (no current
    // key, oversized values, emits during a batch) stops the guest rather than the host.
    imports: { default: trappable },
});
