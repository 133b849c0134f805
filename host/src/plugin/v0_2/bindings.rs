//! Host bindings generated from `wit/operator.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:operator/operator@0.2.0",
    with: {
        "weir:operator/state.value-state": crate::plugin::host::StateHandle,
        "weir:operator/state.list-state": crate::plugin::host::StateHandle,
        "weir:operator/state.map-state": crate::plugin::host::StateHandle,
        "weir:operator/operator-state.list-state": crate::plugin::host::OperatorListHandle,
        "weir:operator/operator-state.broadcast-state": crate::plugin::host::BroadcastHandle,
    },
    // Every host function can trap: misuse of the contract by the guest (no current
    // key, oversized values, runaway emits) stops the guest rather than the host.
    imports: { default: trappable },
});
