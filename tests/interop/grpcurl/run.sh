#!/usr/bin/env bash
# Operators' view: the real grpcurl against a running `agilepm dev`, with no .proto files
# at hand (everything comes from server reflection), run as production runs it: TLS on
# every port (certificates made here with openssl) and tokens minted by `agilepm token`.
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

command -v openssl >/dev/null || { echo "FAIL: openssl is needed to make the test certificates"; exit 1; }
# A CA and a certificate for 127.0.0.1 signed by it.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$data/ca.key" -out "$data/ca.pem" -subj "/CN=agilepm grpcurl CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$data/server.key" -out "$data/server.csr" -subj "/CN=agilepm" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$data/ext"
openssl x509 -req -in "$data/server.csr" -CA "$data/ca.pem" -CAkey "$data/ca.key" -CAcreateserial \
    -days 1 -extfile "$data/ext" -out "$data/server.pem" 2>/dev/null
export AGILEPM_AUTH_SECRET=$(openssl rand -hex 32)
token() { "$agilepm" token "$@" --ttl 1h; }
owner=$(token --tenant grpcurl --role product_owner --subject grpcurl-owner)
other=$(token --tenant other --role viewer --subject other-viewer)
operator=$(token --role operator --subject grpcurl-operator)
tls=(-cacert "$data/ca.pem")

"$agilepm" dev --data-dir "$data" --backlog-item-port 28051 --task-port 28052 \
    --planning-port 28053 --coordinator-port 28054 --notifier-port 28055 --board-port 28050 \
    --tls-cert "$data/server.pem" --tls-key "$data/server.key" --tls-ca "$data/ca.pem" \
    >"$data/dev.out" 2>"$data/dev.err" &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data" "$out"' EXIT
for _ in $(seq 1 120); do
    grep -q "services up, storage" "$data/dev.out" 2>/dev/null && break
    sleep 0.5
done
grep -q "services up, storage" "$data/dev.out" || { echo "FAIL: agilepm dev did not start"; cat "$data/dev.err"; exit 1; }

declare -A own=(
    [28051]=agilepm.backlog.v1.BacklogItemService
    [28052]=agilepm.task.v1.TaskService
    [28053]=agilepm.planning.v1.ProductService
    [28054]=agilepm.coordinator.v1.CoordinatorService
)
for port in 28051 28052 28053 28054; do
    address=127.0.0.1:$port
    check "list on $port shows ${own[$port]}, health and reflection" bash -c \
        "$grpcurl ${tls[*]} $address list | tee /dev/stderr | grep -qx ${own[$port]} &&
         $grpcurl ${tls[*]} $address list | grep -qx grpc.health.v1.Health &&
         $grpcurl ${tls[*]} $address list | grep -q grpc.reflection"
    for service in $("$grpcurl" "${tls[@]}" "$address" list | grep '^agilepm\.'); do
        check "describe $service on $port" bash -c "$grpcurl ${tls[*]} $address describe $service | grep -q '^$service is a service'"
    done
    check "describe a documented message on $port" bash -c \
        "$grpcurl ${tls[*]} $address describe agilepm.events.v1.Heartbeat | grep -q 'scanned_position'"
    check "health Check on $port is SERVING" bash -c \
        "$grpcurl ${tls[*]} $address grpc.health.v1.Health/Check | grep -q '\"status\": \"SERVING\"'"
done

auth=(-H "authorization: Bearer $owner")
key="grpcurl-$RANDOM$RANDOM"
name="grpcurl product $key"
created=$("$grpcurl" "${tls[@]}" "${auth[@]}" -d "{\"request_id\": \"$key\", \"product\": {\"name\": \"$name\", \"status_transition_mode\": \"STATUS_TRANSITION_MODE_MANUAL\"}}" \
    127.0.0.1:28053 agilepm.planning.v1.ProductService/CreateProduct)
id=$(sed -n 's/.*"id": "\([0-9a-f-]*\)".*/\1/p' <<<"$created" | head -1)
check "create a product with a JSON body" test -n "$id"
check "get it back with the same values" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct |
     grep -q '\"name\": \"$name\"' &&
     $grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct |
     grep -q STATUS_TRANSITION_MODE_MANUAL"
check "another tenant gets NotFound" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $other' -d '{\"id\": \"$id\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Code: NotFound'"
check "bad input gets InvalidArgument naming the field" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"id\": \"nope\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Code: InvalidArgument' &&
     $grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"id\": \"nope\"}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/GetProduct 2>&1 | grep -q 'Message: id:'"
check "a team sets its time zone, and the zone comes back" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"settings\": {\"time_zone\": \"America/Los_Angeles\"}}' 127.0.0.1:28053 agilepm.planning.v1.TeamService/UpdateTeamSettings >/dev/null &&
     $grpcurl ${tls[*]} -H 'authorization: Bearer $owner' 127.0.0.1:28053 agilepm.planning.v1.TeamService/GetTeamSettings | grep -Eq '\"time_?[zZ]one\": \"America/Los_Angeles\"'"
check "a zone that is not an IANA name is InvalidArgument naming the field" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $owner' -d '{\"settings\": {\"time_zone\": \"Mars/Olympus\"}}' 127.0.0.1:28053 agilepm.planning.v1.TeamService/UpdateTeamSettings 2>&1 | grep -q 'Message: settings.time_zone:'"
check "a plain tenant id is not a token" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer grpcurl' 127.0.0.1:28053 agilepm.planning.v1.ProductService/ListProducts 2>&1 | grep -q 'Code: Unauthenticated'"
check "a viewer may not create" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $other' -d '{\"request_id\": \"v-$key\", \"product\": {\"name\": \"v\"}}' 127.0.0.1:28053 agilepm.planning.v1.ProductService/CreateProduct 2>&1 | grep -q 'Code: PermissionDenied'"
check "the coordinator's status answers a system operator only" bash -c \
    "$grpcurl ${tls[*]} -H 'authorization: Bearer $operator' 127.0.0.1:28054 agilepm.coordinator.v1.CoordinatorService/GetCoordinatorStatus | grep -q 'position\\|processed\\|{' &&
     $grpcurl ${tls[*]} -H 'authorization: Bearer $owner' 127.0.0.1:28054 agilepm.coordinator.v1.CoordinatorService/GetCoordinatorStatus 2>&1 | grep -q 'Code: PermissionDenied'"
check "plaintext is refused on a TLS port" bash -c \
    "! $grpcurl -plaintext -max-time 5 127.0.0.1:28053 list >/dev/null 2>&1"
check "a database URL's password never reaches the output" bash -c \
    "! timeout 20 '$agilepm' dev --data-dir '$data/pg' --postgres-url 'postgres://app:hunter2@127.0.0.1:1/x' \
        --backlog-item-port 0 --task-port 0 --planning-port 0 --coordinator-port 0 --notifier-port 0 --board-port 0 \
        --metrics-address 127.0.0.1:0 >'$data/pg.out' 2>&1 &&
     grep -q 'app:\*\*\*@127.0.0.1:1' '$data/pg.out' && ! grep -q hunter2 '$data/pg.out'"

echo "grpcurl: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
