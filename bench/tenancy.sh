#!/usr/bin/env bash
# Tenancy overhead (issue 7): times /api/v1/usage/stats (last 30 days) for one
# organization as the admin token (server pool) and as an org_admin key of
# that organization (a scoped transaction under row-level security), 30
# requests each, twice. Run by hand against a filled database, e.g. one kept
# by `KEEP_WORKDIR=1 DATABASE=postgres://… bench/analytics.sh`:
#
#   bench/tenancy.sh postgres://postgres@127.0.0.1:5432/tollgate_bench_… acme
#
# BIN: the tollgate binary (default: the release binary, built with cargo;
# CARGO_TARGET_DIR is respected).
set -euo pipefail
db="$1"; org="$2"; port=18111
bin="${BIN:-}"
# shellcheck source=bench/common.sh
[ -n "$bin" ] || bin=$(cd "$(dirname "$0")/.." && . bench/common.sh && bench_build_tollgate)
work=$(mktemp -d); cd "$work"
key=$(DATABASE_URL="$db" TOLLGATE_LOG=error "$bin" keys create --org "$org" --role org_admin --name rls-bench)
DATABASE_URL="$db" TOLLGATE_LOG=warn TOLLGATE_ADMIN_TOKEN=bench TOLLGATE_LISTEN=127.0.0.1:$port "$bin" serve >serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
start=$(date -u -d '30 days ago' +%F)
measure() {
    local token="$1" query="$2" label="$3"
    for _ in 1 2 3; do curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/usage/stats?$query"; done
    for _ in $(seq 1 30); do
        curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/v1/usage/stats?$query"
    done | sort -n | awk -v label="$label" '{ t[NR] = $1 * 1000 } END { printf "%-34s p50 %6.1f ms  p95 %6.1f ms  max %6.1f ms\n", label, t[int(NR*0.5)], t[int(NR*0.95)], t[NR] }'
}
for _ in 1 2; do
    measure bench "org_id=$org&start_date=$start" "admin token, org_id=$org"
    measure "$key" "start_date=$start" "org_admin key of $org (RLS)"
done
