#!/usr/bin/env bash
# Starts the five service binaries the way the container image starts them (same
# commands, same environment variables as compose.yaml: mutual TLS with certificates and a
# token secret from deploy/make-secrets.sh, PostgreSQL databases) against this machine's
# PostgreSQL, and checks each healthy with the image's own HEALTHCHECK command
# (`agilepm health`, over TLS). Given grpcurl, it also creates a product (planning records
# it in backlog-item over mutual TLS) and plans an item for it. Used by .ci/run; exits
# non-zero on any failure.
#
#   deploy/check-started-as-in-image.sh [BIN_DIR] [POSTGRES_SERVER_URL] [BASE_PORT] [GRPCURL]
#
# BASE_PORT (default 50051, as in the image) moves the five ports together. CI passes a
# port below Linux's ephemeral range (32768-60999): there, a peer's outgoing database
# connection can hold 50054 as its local port just as the coordinator binds it.
set -euo pipefail

bin_dir=${1:-target/debug}
server=${2:-postgres://root@127.0.0.1:5432}
base=${3:-50051}
grpcurl=${4:-}
services=(backlog-item task planning coordinator notifier)
ports=($base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)))
pids=()
secrets=$(mktemp -d)
"$(dirname "$0")/make-secrets.sh" "$secrets" >/dev/null

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for svc in "${services[@]}"; do
        psql "$server/postgres" -qAtc "DROP DATABASE IF EXISTS agilepm_imagecheck_${svc//-/_} WITH (FORCE)" >/dev/null
    done
    rm -rf "$secrets"
}
trap cleanup EXIT

for i in "${!services[@]}"; do
    svc=${services[$i]}
    db=agilepm_imagecheck_${svc//-/_}
    psql "$server/postgres" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    psql "$server/postgres" -qAtc "CREATE DATABASE $db" >/dev/null
    AGILEPM_LISTEN=0.0.0.0:${ports[$i]} \
    AGILEPM_HEALTH_ADDRESS=127.0.0.1:${ports[$i]} \
    AGILEPM_DATABASE_URL=$server/$db \
    AGILEPM_REQUIRE_AUTH=true \
    AGILEPM_AUTH_SECRET=$(cat "$secrets/auth-secret") \
    AGILEPM_TLS_CERT=$secrets/$svc.crt \
    AGILEPM_TLS_KEY=$secrets/$svc.key \
    AGILEPM_TLS_CA=$secrets/ca.crt \
    AGILEPM_TLS_CLIENT_CA=$secrets/ca.crt \
    AGILEPM_BACKLOG_ITEM_ENDPOINT=https://127.0.0.1:${ports[0]} \
    AGILEPM_TASK_ENDPOINT=https://127.0.0.1:${ports[1]} \
    AGILEPM_PLANNING_ENDPOINT=https://127.0.0.1:${ports[2]} \
    AGILEPM_LOG_FORMAT=json \
    AGILEPM_METRICS_ADDRESS=127.0.0.1:$((ports[$i] + 100)) \
    RUST_LOG=warn \
        "$bin_dir/agilepm-$svc" &
    pids+=($!)
done

for i in "${!services[@]}"; do
    svc=${services[$i]}
    ok=
    for _ in $(seq 1 60); do
        if AGILEPM_HEALTH_ADDRESS=127.0.0.1:${ports[$i]} AGILEPM_TLS_CERT=$secrets/$svc.crt \
            AGILEPM_TLS_KEY=$secrets/$svc.key AGILEPM_TLS_CA=$secrets/ca.crt \
            "$bin_dir/agilepm" health >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.5
    done
    if [[ -z $ok ]]; then
        echo "FAIL: $svc on port ${ports[$i]} never answered health SERVING" >&2
        exit 1
    fi
    # The Kubernetes liveness probe's command answers too.
    if ! AGILEPM_HEALTH_ADDRESS=127.0.0.1:${ports[$i]} AGILEPM_TLS_CERT=$secrets/$svc.crt \
        AGILEPM_TLS_KEY=$secrets/$svc.key AGILEPM_TLS_CA=$secrets/ca.crt \
        "$bin_dir/agilepm" health --liveness >/dev/null 2>&1; then
        echo "FAIL: $svc on port ${ports[$i]} does not answer the liveness probe" >&2
        exit 1
    fi
    # Prometheus finds its metrics (the health checks above are counted calls). A call
    # is counted when the server has finished its response body, which may be a moment
    # after the client has read the last frame: wait for it, up to 5 s.
    counted=
    for _ in $(seq 1 50); do
        if curl -sf "http://127.0.0.1:$((ports[$i] + 100))/metrics" | grep -q '^rpc_server_call_duration_seconds_count{'; then
            counted=1
            break
        fi
        sleep 0.1
    done
    if [[ -z $counted ]]; then
        echo "FAIL: $svc serves no call metrics at 127.0.0.1:$((ports[$i] + 100))/metrics" >&2
        exit 1
    fi
    echo "ok: $svc on port ${ports[$i]} is SERVING and live, metrics on $((ports[$i] + 100)) (started as in the image)"
done
# A deployment that forgot its key does not start.
if AGILEPM_REQUIRE_AUTH=true AGILEPM_LISTEN=127.0.0.1:0 AGILEPM_DATABASE_URL=sqlite://$secrets/x.db \
    timeout 10 "$bin_dir/agilepm-task" >/dev/null 2>&1; then
    echo "FAIL: a service started without a key although AGILEPM_REQUIRE_AUTH is set" >&2
    exit 1
fi
echo "ok: with AGILEPM_REQUIRE_AUTH and no key, a service refuses to start"

# The image's health check must fail against plaintext expectations: without the
# service's TLS settings it cannot reach a TLS port.
if AGILEPM_HEALTH_ADDRESS=127.0.0.1:${ports[0]} "$bin_dir/agilepm" health >/dev/null 2>&1; then
    echo "FAIL: a plaintext health check reached a TLS port" >&2
    exit 1
fi
echo "ok: a plaintext probe cannot reach a TLS port"

if [[ -n $grpcurl ]]; then
    token=$(AGILEPM_AUTH_SECRET=$(cat "$secrets/auth-secret") "$bin_dir/agilepm" token \
        --tenant imagecheck --role product_owner --subject imagecheck --ttl 10m)
    tls=(-cacert "$secrets/ca.crt" -cert "$secrets/planning.crt" -key "$secrets/planning.key")
    product=$("$grpcurl" "${tls[@]}" -H "authorization: Bearer $token" \
        -d "{\"request_id\": \"$RANDOM$RANDOM\", \"product\": {\"name\": \"image check\"}}" \
        "127.0.0.1:${ports[2]}" agilepm.planning.v1.ProductService/CreateProduct |
        sed -n 's/.*"id": "\([0-9a-f-]*\)".*/\1/p' | head -1)
    [[ -n $product ]] || { echo "FAIL: CreateProduct over mutual TLS" >&2; exit 1; }
    "$grpcurl" "${tls[@]}" -H "authorization: Bearer $token" \
        -d "{\"request_id\": \"$RANDOM$RANDOM\", \"product_id\": \"$product\", \"summary\": \"s\"}" \
        "127.0.0.1:${ports[0]}" agilepm.backlog.v1.BacklogItemService/PlanBacklogItem | grep -q '"status": "BACKLOG_ITEM_STATUS_PLANNED"' ||
        { echo "FAIL: PlanBacklogItem for a product planning recorded over mutual TLS" >&2; exit 1; }
    echo "ok: a product created in planning is recorded in backlog-item over mutual TLS"
fi

