#!/usr/bin/env bash
# Flink's stop-with-savepoint + restore, the peer of weir's live upgrade bench:
#   bash bench/flink/upgrade.sh [keys...]      (default 10000 100000 1000000)
# Needs Java 17 and the Flink 2.3 jars that ../shared/bench/flink/run.sh caches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${WEIR_FLINK_CACHE:-$HOME/.cache/weir-flink}"
lib="$cache/pyflink/lib"
[ -d "$lib" ] || { echo "no Flink jars in $lib: run ../shared/bench/flink/run.sh once" >&2; exit 1; }
classes="$cache/upgrade-classes"
mkdir -p "$classes"
javac -cp "$lib/*" -d "$classes" "$here/UpgradeRestart.java"
keys=("$@"); [ ${#keys[@]} -gt 0 ] || keys=(10000 100000 1000000)
for k in "${keys[@]}"; do
  for backend in hashmap rocksdb; do
    sp="$(mktemp -d)"
    java --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED \
      -cp "$classes:$lib/*" UpgradeRestart "$k" "$backend" "file://$sp" 2>/dev/null | grep '^flink'
    rm -rf "$sp"
  done
done
