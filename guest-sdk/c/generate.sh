#!/usr/bin/env bash
# Regenerates the C SDK's bindings (guest-sdk/c/bindings/<world>/) with wit-bindgen's C
# generator, pinned to the version the Rust SDK uses: the operator world from wit/v0.3
# (contract 0.3), the window function worlds from wit/ (the 0.2 package). Run it whenever
# wit/*.wit or wit/v0.3/*.wit changes: a test (weir-toolchain) compares bindings/wit.sha256
# with them.
#   bash guest-sdk/c/generate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
version=0.61.1
tools="${WEIR_TOOLS:-$HOME/.cache/weir-tools}"
bindgen="$tools/wit-bindgen/bin/wit-bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -q "$version"; then
  cargo install --locked wit-bindgen-cli --version "$version" --root "$tools/wit-bindgen"
fi
for world in co-operator aggregate-function reduce-function process-window-function; do
  out="guest-sdk/c/bindings/${world//-/_}"
  dir=wit; [ "$world" = co-operator ] && dir=wit/v0.3
  rm -rf "$out"
  mkdir -p "$out"
  "$bindgen" c "$dir" --world "$world" --out-dir "$out" >/dev/null
done
sha256sum wit/*.wit wit/v0.3/*.wit > guest-sdk/c/bindings/wit.sha256
