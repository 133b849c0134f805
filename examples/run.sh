#!/usr/bin/env bash
# Builds an example's guest components and runs its job on the weir host.
#   bash examples/run.sh login-anomaly
set -euo pipefail
cd "$(dirname "$0")/.."
example="${1:-login-anomaly}"
job="examples/$example/job.toml"
[ -f "$job" ] || { echo "no such example: $example (see examples/)" >&2; exit 2; }
bash scripts/setup
# Every example guest, so that jobs which combine them (word-count) find them all.
cargo build --quiet --release --target wasm32-wasip2 \
  -p keyed-count -p word-count -p login-anomaly -p sessions -p session-summary -p buffering -p enrichment -p dynamic-rules
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --quiet -p weir-host
weir="$target_dir/debug/weir"
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
    "$weir" build "$app" -o "$out" >/dev/null
  fi
done
exec "$weir" run "$job" --plugin-dir "$target_dir/wasm32-wasip2/release" --plugin-dir "$sdk_dir"
