#!/usr/bin/env bash
# A smoke of every `agilepm bench` mode, a few items each, so a change that breaks a mode
# fails CI instead of the next measurement. Each run must exit 0 and report every item
# DONE exactly once with no error. (--scale, the 1M-task preload, is left to real
# measurements: it takes minutes.)
#
#   .ci/bench-smoke.sh [AGILEPM_BIN]
set -euo pipefail
agilepm=${1:-target/debug/agilepm}
items=2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
modes=(
    "--engine sqlite"
    "--engine postgres"
    "--half-of-max"
    "--feed nats --coordinators 3"
    "--subscribers 100"
    "--telemetry on"
)
for mode in "${modes[@]}"; do
    started=$SECONDS
    # shellcheck disable=SC2086 # each mode is several arguments
    if ! "$agilepm" bench --items $items --clients 2 --baseline-seconds 1 --webhooks 1 $mode >"$out" 2>&1; then
        echo "FAIL: agilepm bench $mode exited non-zero:" >&2
        tail -40 "$out" >&2
        exit 1
    fi
    # Every run of the mode (--half-of-max makes two) finished every item once, no errors.
    if grep '^| items DONE / DONE transitions / errors |' "$out" | grep -qv "| $items / $items / 0 |"; then
        echo "FAIL: agilepm bench $mode: $(grep '^| items DONE' "$out")" >&2
        tail -60 "$out" >&2
        exit 1
    fi
    echo "ok: agilepm bench $mode ($((SECONDS - started)) s): $(grep -c '^| items DONE' "$out") run(s), every item DONE once"
done
