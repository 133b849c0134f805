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
  -p keyed-count -p word-count -p login-anomaly -p sessions -p session-summary
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# Python operators (examples/<name>/*.py) are built with the Python SDK (componentize-py,
# installed by scripts/setup) into the example's own directory.
python_dir="$target_dir/python-examples/$example"
mkdir -p "$python_dir"
for app in examples/"$example"/*.py; do
  [ -f "$app" ] || continue
  out="$python_dir/$(basename "${app%.py}").wasm"
  if [ ! -f "$out" ] || [ "$app" -nt "$out" ]; then
    python3 guest-sdk/python/weir/build.py "$app" -o "$out" \
      --componentize-py "${WEIR_TOOLS:-$HOME/.cache/weir-tools}/py/bin/componentize-py" >/dev/null
  fi
done
# JavaScript operators (examples/<name>/*.js) likewise, with the JS SDK (componentize-js).
for app in examples/"$example"/*.js; do
  [ -f "$app" ] || continue
  out="$python_dir/$(basename "${app%.js}").wasm"
  if [ ! -f "$out" ] || [ "$app" -nt "$out" ]; then
    node guest-sdk/js/build.mjs "$app" -o "$out"
  fi
done
exec cargo run --quiet -p weir-host -- run "$job" --plugin-dir "$target_dir/wasm32-wasip2/release" --plugin-dir "$python_dir"
