#!/usr/bin/env bash
# Operators' view: the real grpcurl against a running `agilepm dev`, with no .proto files
# at hand (everything comes from server reflection).
#
#   tests/interop/grpcurl/run.sh [AGILEPM_BIN] [GRPCURL]
set -uo pipefail

repo=$(cd "$(dirname "$0")/../../.." && pwd)
agilepm=${1:-$repo/target/debug/agilepm}
grpcurl=${2:-grpcurl}
data=$(mktemp -d)
# Ports 28051-28054: below Linux's ephemeral range, so no outgoing connection holds them.
out=$(mktemp)
passed=0
failed=0

check() { # check NAME COMMAND... : the command must succeed
    local name=$1
    shift
    if "$@" >"$out" 2>&1; then
        passed=$((passed + 1))
        echo "ok: $name"
    else
        failed=$((failed + 1))
        echo "FAIL: $name"
        sed 's/^/    /' "$out"
    fi
}

"$agilepm" dev --data-dir "$data" --backlog-item-port 28051 --task-port 28052 \
    --planning-port 28053 --coordinator-port 28054 >"$data/dev.out" 2>"$data/dev.err" &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data" "$out"' EXIT
for _ in $(seq 1 120); do
    grep -q "four services up" "$data/dev.out" 2>/dev/null && break
    sleep 0.5
done
grep -q "four services up" "$data/dev.out" || { echo "FAIL: agilepm dev did not start"; cat "$data/dev.err"; exit 1; }

declare -A own=(
    [28051]=agilepm.backlog.v1.BacklogItemService
    [28052]=agilepm.task.v1.TaskService
    [28053]=agilepm.planning.v1.ProductService
    [28054]=agilepm.coordinator.v1.CoordinatorService
)
for port in 28051 28052 28053 28054; do
    address=127.0.0.1:$port
    check "list on $port shows ${own[$port]}, health and reflection" bash -c \
        "$grpcurl -plaintext $address list | tee /dev/stderr | grep -qx ${own[$port]} &&
         $grpcurl -plaintext $address list | grep -qx grpc.health.v1.Health &&
         $grpcurl -plaintext $address list | grep -q grpc.reflection"
    for service in $("$grpcurl" -plaintext "$address" list | grep '^agilepm\.'); do
        check "describe $service on $port" bash -c "$grpcurl -plaintext $address describe $service | grep -q '^$service is a service'"
    done
    check "describe a documented message on $port" bash -c \
        "$grpcurl -plaintext $address describe agilepm.events.v1.Heartbeat | grep -q 'scanned_position'"
    check "health Check on $port is SERVING" bash -c \
        "$grpcurl -plaintext $address grpc.health.v1.Health/Check | grep -q '\"status\": \"SERVING\"'"
done

auth=(-H 'authorization: Bearer grpcurl')
key="grpcurl-$RANDOM$RANDOM"
name="grpcurl product $key"
created=$("$grpcurl" -plaintext "${auth[@]}" -d "{\"request_id\": \"$key\", \"product\": {\"name\": \"$name\", \"status_transition_mode\": \"STATUS_TRANSITION_MODE_MANUAL\"}}" \
    127.0.0.1:28053 agilepm.planning.v1.ProductService/CreateProduct)
id=$(sed -n 's/.*"id": "\([0-9a-f-]*\)".*/\1/p' <<<"$created" | head -1)
check "create a product with a JSON body" test -n "$id"
check "get it back with the same values" bash -c \
    "$grpcurl -plaintext -H 'authorization: Bearer grpcurl' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct |
     grep -q '\"name\": \"$name\"' &&
     $grpcurl -plaintext -H 'authorization: Bearer grpcurl' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct |
     grep -q STATUS_TRANSITION_MODE_MANUAL"
check "another tenant gets NotFound" bash -c \
    "$grpcurl -plaintext -H 'authorization: Bearer other' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Code: NotFound'"
check "bad input gets InvalidArgument naming the field" bash -c \
    "$grpcurl -plaintext -H 'authorization: Bearer grpcurl' -d '{\"id\": \"nope\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Code: InvalidArgument' &&
     $grpcurl -plaintext -H 'authorization: Bearer grpcurl' -d '{\"id\": \"nope\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Message: id:'"

echo "grpcurl: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
