#!/usr/bin/env bash
# Ingest throughput on this machine: straight into the recorder and through
# the HTTP API, on SQLite and PostgreSQL, in batches of 1,000 records.
# Run by hand; figures go to docs/benchmarks.md. Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth) for the PostgreSQL rows.
set -euo pipefail
cd "$(dirname "$0")/.."
records="${RECORDS:-200000}"
cargo build --release --quiet
cargo build --release --quiet --bench ingest
bench=$(ls -t target/release/deps/ingest-* | grep -v '\.d$' | head -1)

fresh_postgres() {
    local name="tollgate_bench_$RANDOM"
    psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE $name" >/dev/null
    # Loopback: no TLS. sqlx does not set TCP_NODELAY, and over TLS each large
    # batch stalls on Nagle + delayed ACK (see docs/benchmarks.md).
    echo "postgres://postgres@127.0.0.1:5432/$name?sslmode=${PGSSLMODE:-disable}"
}

for mode in ${MODES:-store recorder http}; do
    "$bench" --mode "$mode" --database sqlite --records "$records"
    url=$(fresh_postgres)
    "$bench" --mode "$mode" --database "$url" --records "$records"
    name=${url##*/}
    psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE ${name%%\?*} WITH (FORCE)" >/dev/null
done
