#!/usr/bin/env bash
# Ingest throughput on this machine: straight into the store, into the
# recorder and through the HTTP API, on SQLite and PostgreSQL, in batches of
# 1,000 records. After each run the bench binary checks the database it
# wrote (issue 9): every record sent is in the ledger, and the raw records
# agree with the rollups, the budget spend and the alert minutes to the
# nano-dollar (the `http` server is stopped with SIGTERM first); the script
# fails if not. Run by hand or by bench/suite.sh; figures go to
# docs/benchmarks.md. Needs PostgreSQL (default 127.0.0.1:5432, trust auth,
# user postgres) for the PostgreSQL rows.
#
#   bench/ingest.sh
#   RECORDS=1000000 MODES="recorder http" BACKENDS=sqlite bench/ingest.sh
#
# Settings: RECORDS (200000), MODES (store recorder http), BACKENDS
# (sqlite postgres), POSTGRES (a server URL, default
# postgres://postgres@127.0.0.1:5432/postgres: a fresh database is made on
# it for each run and dropped after it), PGSSLMODE (disable).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/common.sh
. bench/common.sh
records="${RECORDS:-200000}"
postgres="${POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
bin=$(bench_build_tollgate)
bench=$(bench_build_bench ingest)
# The `http` mode starts this binary.
export TOLLGATE_BIN="$bin"

pg_name=
drop_postgres() {
    [ -z "$pg_name" ] || psql "$postgres" -q -c "DROP DATABASE IF EXISTS $pg_name WITH (FORCE)" >/dev/null
    pg_name=
}
trap drop_postgres EXIT

echo "machine: $(bench_machine)"
for mode in ${MODES:-store recorder http}; do
    for backend in ${BACKENDS:-sqlite postgres}; do
        if [ "$backend" = sqlite ]; then
            # A file in a temporary folder of the bench binary's own.
            "$bench" --mode "$mode" --database sqlite --records "$records"
        else
            pg_name="tollgate_bench_$$_$RANDOM"
            psql "$postgres" -q -c "CREATE DATABASE $pg_name" >/dev/null
            # Loopback: no TLS. sqlx does not set TCP_NODELAY, and over TLS each
            # large batch stalls on Nagle + delayed ACK (see docs/benchmarks.md).
            url="${postgres%/*}/$pg_name?sslmode=${PGSSLMODE:-disable}"
            "$bench" --mode "$mode" --database "$url" --records "$records"
            drop_postgres
        fi
    done
done
