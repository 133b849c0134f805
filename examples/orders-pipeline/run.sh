#!/usr/bin/env bash
# Runs the order-processing pipeline end to end with everything it needs, started here
# on loopback ports and stopped at the end: tansu (Kafka) on 19092, PostgreSQL on
# 15432, an S3 server (s3s-fs) on 19000, all with their data in a temporary directory.
#   bash examples/orders-pipeline/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
started=$SECONDS
step() { echo "weir [$((SECONDS - started)) s]: $*" >&2; }

step "checking the toolchains and servers (Rust, tansu, s3s-fs, PostgreSQL)"
bash scripts/setup rust
bash scripts/install-tansu
bash scripts/install-s3s
bash scripts/install-postgres
tools="${WEIR_TOOLS:-$HOME/.cache/weir-tools}"
pg_bin="${WEIR_POSTGRES_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"

step "building the example operators and the weir host (with Parquet: a first build takes a while)"
cargo build --quiet --release --target wasm32-wasip2 -p orders-validate -p orders-enrich
cargo build --quiet -p weir-host
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
weir="$target_dir/debug/weir"
plugins="$target_dir/wasm32-wasip2/release"

work="$(mktemp -d)"
chmod 755 "$work"   # the PostgreSQL server runs as its own user
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/pg/data/postmaster.pid" ]; then as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

step "starting tansu (Kafka) on 127.0.0.1:19092"
mkdir -p "$work/tansu"
(cd "$work/tansu" && RUST_LOG=warn exec "$tools/bin/tansu" broker \
  --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
  --storage-engine sqlite://tansu.db >/dev/null 2>&1) &
pids+=($!)

step "starting an S3 server (s3s-fs) on 127.0.0.1:19000"
mkdir -p "$work/s3/lake"
export AWS_ACCESS_KEY_ID=weir-demo AWS_SECRET_ACCESS_KEY=weir-demo-secret
"$tools/bin/s3s-fs" --host 127.0.0.1 --port 19000 --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" >/dev/null 2>&1 &
pids+=($!)

step "starting PostgreSQL on 127.0.0.1:15432"
export ORDERS_DB_PASSWORD=weir-demo-password
mkdir -p "$work/pg"
echo "$ORDERS_DB_PASSWORD" > "$work/pg/password"
[ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U weir --auth-host=scram-sha-256 --auth-local=trust \
  --pwfile="$work/pg/password" -E UTF8 --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w start \
  -o "-p 15432 -k $work/pg -c listen_addresses=127.0.0.1 -c max_prepared_transactions=8" >/dev/null
psql() { PGPASSWORD="$ORDERS_DB_PASSWORD" "$pg_bin/psql" -h 127.0.0.1 -p 15432 -U weir -v ON_ERROR_STOP=1 -q "$@"; }
psql -d postgres -c "CREATE DATABASE shop"
psql -d shop -f "$here/schema.sql"

step "creating the topics and producing $(wc -l < "$here/orders.jsonl") orders (a weir job: file to Kafka)"
for _ in $(seq 50); do
  # One partition: the tutorial's producer keys orders by id, so both copies of an
  # order id meet in order; one partition keeps the file's order the same way.
  "$tools/bin/tansu" topic create --broker tcp://127.0.0.1:19092 --partitions 1 orders >/dev/null 2>&1 && break
  sleep 0.2
done
"$tools/bin/tansu" topic create --broker tcp://127.0.0.1:19092 --partitions 1 orders-dlq >/dev/null
cat > "$work/produce.toml" <<TOML
name = "produce-orders"
[[source]]
type = "file"
uid = "lines"
path = "$here/orders.jsonl"
[[sink]]
type = "kafka"
uid = "topic"
brokers = "127.0.0.1:19092"
topic = "orders"
[[edge]]
from = "lines"
to = "topic"
TOML
"$weir" run "$work/produce.toml" 2>/dev/null

step "running the pipeline (examples/orders-pipeline/job.toml)"
(cd "$work" && "$weir" run "$here/job.toml" --plugin-dir "$plugins")

step "valid orders in PostgreSQL (table orders):"
psql -d shop -c "SELECT order_id, customer_id, total_amount, items, tier, region FROM orders ORDER BY order_id"
step "invalid orders in the dead-letter topic orders-dlq (why: the weir.error header):"
cat > "$work/dlq.toml" <<TOML
name = "read-dlq"
[[source]]
type = "kafka"
uid = "dlq"
brokers = "127.0.0.1:19092"
topics = ["orders-dlq"]
bounded = true
start = "earliest"
[[sink]]
type = "stdout"
uid = "out"
format = "envelope"
[[edge]]
from = "dlq"
to = "out"
TOML
"$weir" run "$work/dlq.toml" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    h = r.get("headers", {})
    v = r["value"] if isinstance(r["value"], str) else json.dumps(r["value"])
    origin, why = h.get("weir.error.origin", "?"), h.get("weir.error", "")
    print(f"  {origin:>10}: {why}")
    print(f"              {v[:110]}")
'
step "enriched orders archived as Parquet in s3://lake/orders:"
ls "$work/s3/lake/orders" | sed 's/^/  /'
