#!/usr/bin/env bash
# Builds an example's guest components and runs its job on the weir host.
#   bash examples/run.sh login-anomaly
set -euo pipefail
cd "$(dirname "$0")/.."
example="${1:-login-anomaly}"
job="examples/$example/job.toml"
[ -f "$job" ] || { echo "no such example: $example (see examples/)" >&2; exit 2; }
started=$SECONDS
step() { echo "weir [$((SECONDS - started)) s]: $*" >&2; }
# Only the toolchains this example needs: Rust always, an SDK's for its operators.
needs=(rust)
compgen -G "examples/$example/*.py" >/dev/null && needs+=(python)
compgen -G "examples/$example/*.js" >/dev/null && needs+=(js)
compgen -G "examples/$example/*.c" >/dev/null && needs+=(c)
step "checking the toolchains (${needs[*]})"
bash scripts/setup "${needs[@]}"
# Every example guest, so that jobs which combine them (word-count) find them all.
step "building the Rust example operators (wasm32-wasip2 components)"
cargo build --quiet --release --target wasm32-wasip2 \
  -p keyed-count -p word-count -p login-anomaly -p sessions -p session-summary -p buffering -p enrichment -p dynamic-rules -p orders-validate -p orders-enrich
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
weir="$target_dir/debug/weir"
# The examples keep their state in memory and use none of the heavier connectors: unless
# RocksDB is built already (the tests build it), the host is built without the default
# features (RocksDB, Parquet, PostgreSQL, Avro), which saves most of a first build.
features=()
if ! compgen -G "$target_dir/debug/build/librocksdb-sys-*/out/librocksdb.a" >/dev/null; then
  features=(--no-default-features)
fi
if [ -x "$weir" ]; then
  step "building the weir host (up to date in seconds)"
else
  step "building the weir host (the first build compiles wasmtime and the connectors: about 8 minutes on 2 cores)"
fi
cargo build --quiet -p weir-host "${features[@]}"
# Operators in Python, JavaScript and C (examples/<name>/*.py, *.js, *.c) are built with
# their SDK by `weir build` (the toolchains come from scripts/setup) into the example's
# own directory.
sdk_dir="$target_dir/sdk-examples/$example"
mkdir -p "$sdk_dir"
for app in examples/"$example"/*.py examples/"$example"/*.js examples/"$example"/*.c; do
  [ -f "$app" ] || continue
  name="$(basename "$app")"
  out="$sdk_dir/${name%.*}.wasm"
  if [ ! -f "$out" ] || [ "$app" -nt "$out" ]; then
    step "building $app into a component (weir build)"
    "$weir" build "$app" -o "$out" >/dev/null
  fi
done
step "running $job"
exec "$weir" run "$job" --plugin-dir "$target_dir/wasm32-wasip2/release" --plugin-dir "$sdk_dir"
