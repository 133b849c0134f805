//! Host bindings generated from `wit/operator.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "weir:operator/operator",
    with: {
        "weir:operator/state.value-state": super::host::StateHandle,
        "weir:operator/state.list-state": super::host::StateHandle,
        "weir:operator/state.map-state": super::host::StateHandle,
    },
    // Every host function can trap: misuse of the contract by the guest (no current
    // key, oversized values, runaway emits) stops the guest rather than the host.
    imports: { default: trappable },
    additional_derives: [PartialEq, Eq],
});
