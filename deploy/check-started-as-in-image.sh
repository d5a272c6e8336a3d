#!/usr/bin/env bash
# Starts the four service binaries the way the container image starts them (same
# commands, same environment variables as compose.yaml, PostgreSQL databases) against
# this machine's PostgreSQL, and checks each healthy with the image's own HEALTHCHECK
# command (`agilepm health`). Used by .ci/run; exits non-zero on any failure.
#
#   deploy/check-started-as-in-image.sh [BIN_DIR] [POSTGRES_SERVER_URL] [BASE_PORT]
#
# BASE_PORT (default 50051, as in the image) moves the four ports together. CI passes a
# port below Linux's ephemeral range (32768-60999): there, a peer's outgoing database
# connection can hold 50054 as its local port just as the coordinator binds it.
set -euo pipefail

bin_dir=${1:-target/debug}
server=${2:-postgres://root@127.0.0.1:5432}
base=${3:-50051}
services=(backlog-item task planning coordinator)
ports=($base $((base + 1)) $((base + 2)) $((base + 3)))
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for svc in "${services[@]}"; do
        psql "$server/postgres" -qAtc "DROP DATABASE IF EXISTS agilepm_imagecheck_${svc//-/_} WITH (FORCE)" >/dev/null
    done
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
    AGILEPM_AUTH_SECRET=image-check-secret \
    AGILEPM_BACKLOG_ITEM_ENDPOINT=http://127.0.0.1:${ports[0]} \
    AGILEPM_TASK_ENDPOINT=http://127.0.0.1:${ports[1]} \
    AGILEPM_PLANNING_ENDPOINT=http://127.0.0.1:${ports[2]} \
    AGILEPM_LOG_FORMAT=json \
    RUST_LOG=warn \
        "$bin_dir/agilepm-$svc" &
    pids+=($!)
done

for i in "${!services[@]}"; do
    svc=${services[$i]}
    ok=
    for _ in $(seq 1 60); do
        if AGILEPM_HEALTH_ADDRESS=127.0.0.1:${ports[$i]} "$bin_dir/agilepm" health >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.5
    done
    if [[ -z $ok ]]; then
        echo "FAIL: $svc on port ${ports[$i]} never answered health SERVING" >&2
        exit 1
    fi
    echo "ok: $svc on port ${ports[$i]} is SERVING (started as in the image)"
done
