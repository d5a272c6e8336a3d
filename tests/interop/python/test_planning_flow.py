"""A full planning flow through clients generated from proto/ with grpcio-tools."""

import datetime
import uuid

import grpc
import pytest

from conftest import TENANT, VIEWER


def day(offset: int) -> str:
    """The UTC day `offset` days from today, YYYY-MM-DD."""
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)).isoformat()


def rid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def api(channels):
    from agilepm.backlog.v1 import backlog_item_pb2_grpc
    from agilepm.events.v1 import feed_pb2_grpc
    from agilepm.planning.v1 import product_pb2_grpc, release_pb2_grpc, sprint_pb2_grpc, use_case_pb2_grpc
    from agilepm.task.v1 import task_pb2_grpc

    class Api:
        products = product_pb2_grpc.ProductServiceStub(channels["planning"])
        use_cases = use_case_pb2_grpc.UseCaseServiceStub(channels["planning"])
        releases = release_pb2_grpc.ReleaseServiceStub(channels["planning"])
        sprints = sprint_pb2_grpc.SprintServiceStub(channels["planning"])
        items = backlog_item_pb2_grpc.BacklogItemServiceStub(channels["backlog-item"])
        tasks = task_pb2_grpc.TaskServiceStub(channels["task"])
        backlog_feed = feed_pb2_grpc.EventFeedServiceStub(channels["backlog-item"])

    return Api


def test_an_item_is_planned_committed_burnt_down_and_seen_done_on_the_feed(api):
    from agilepm.backlog.v1 import backlog_item_pb2, events_pb2
    from agilepm.events.v1 import feed_pb2
    from agilepm.planning.v1 import product_pb2, release_pb2, sprint_pb2, use_case_pb2
    from agilepm.task.v1 import task_pb2

    head = api.backlog_feed.GetFeedHead(feed_pb2.GetFeedHeadRequest(), metadata=TENANT).head_position
    product = api.products.CreateProduct(
        product_pb2.CreateProductRequest(request_id=rid(), product=product_pb2.Product(name=f"Interop {rid()}")),
        metadata=TENANT,
    ).product
    use_case = api.use_cases.CreateUseCase(
        use_case_pb2.CreateUseCaseRequest(
            request_id=rid(),
            use_case=use_case_pb2.UseCase(product_id=product.id, title="Check out", value_statement="revenue now"),
        ),
        metadata=TENANT,
    ).use_case
    release = api.releases.ScheduleRelease(
        release_pb2.ScheduleReleaseRequest(
            request_id=rid(),
            release=release_pb2.Release(product_id=product.id, name="1.0", begin_date=day(-30), end_date=day(60)),
        ),
        metadata=TENANT,
    ).release
    sprint = api.sprints.ScheduleSprint(
        sprint_pb2.ScheduleSprintRequest(
            request_id=rid(),
            sprint=sprint_pb2.Sprint(product_id=product.id, name="S1", begin_date=day(-3), end_date=day(8)),
        ),
        metadata=TENANT,
    ).sprint
    item = api.items.PlanBacklogItem(
        backlog_item_pb2.PlanBacklogItemRequest(
            request_id=rid(), product_id=product.id, summary="Pay by card", use_case_id=use_case.id
        ),
        metadata=TENANT,
    ).backlog_item
    assert item.status == backlog_item_pb2.BACKLOG_ITEM_STATUS_PLANNED
    api.releases.ScheduleBacklogItemForRelease(
        release_pb2.ScheduleBacklogItemForReleaseRequest(release_id=release.id, backlog_item_id=item.id), metadata=TENANT
    )
    committed = api.sprints.CommitBacklogItemToSprint(
        sprint_pb2.CommitBacklogItemToSprintRequest(sprint_id=sprint.id, backlog_item_id=item.id), metadata=TENANT
    ).backlog_item
    assert committed.status == backlog_item_pb2.BACKLOG_ITEM_STATUS_COMMITTED

    task_ids = []
    for name in ("write it", "test it"):
        task = api.tasks.DefineTask(
            task_pb2.DefineTaskRequest(request_id=rid(), backlog_item_id=item.id, name=name, hours_remaining=3),
            metadata=TENANT,
        ).task
        task_ids.append(task.id)
    # Today, then tomorrow (an estimate may be dated at most one day ahead of UTC).
    for offset, hours in ((0, 2), (1, 0)):
        for task_id in task_ids:
            response = api.tasks.EstimateTaskHoursRemaining(
                task_pb2.EstimateTaskHoursRemainingRequest(id=task_id, hours_remaining=hours, date=day(offset)),
                metadata=TENANT,
            )
    assert response.totals.hours_remaining == 0 and response.totals.task_count == 2

    # DONE is observed on the backlog-item feed, not by polling.
    stream = api.backlog_feed.Subscribe(
        feed_pb2.SubscribeRequest(
            after_position=head,
            aggregate_ids=[item.id],
            event_types=["agilepm.backlog.v1.BacklogItemStatusChanged"],
        ),
        metadata=TENANT,
        timeout=30,
    )
    seen = []
    for message in stream:
        if message.WhichOneof("kind") != "event":
            continue
        change = events_pb2.BacklogItemStatusChanged()
        assert message.event.payload.Unpack(change)
        seen.append((message.event.position, change.new_status))
        if change.new_status == backlog_item_pb2.BACKLOG_ITEM_STATUS_DONE:
            break
    stream.cancel()
    assert [status for _, status in seen] == [
        backlog_item_pb2.BACKLOG_ITEM_STATUS_SCHEDULED,
        backlog_item_pb2.BACKLOG_ITEM_STATUS_COMMITTED,
        backlog_item_pb2.BACKLOG_ITEM_STATUS_DONE,
    ]

    # A subscription resumed after the first change continues exactly where it stopped.
    resumed = api.backlog_feed.Subscribe(
        feed_pb2.SubscribeRequest(
            after_position=seen[0][0],
            aggregate_ids=[item.id],
            event_types=["agilepm.backlog.v1.BacklogItemStatusChanged"],
        ),
        metadata=TENANT,
        timeout=30,
    )
    positions = []
    for message in resumed:
        if message.WhichOneof("kind") == "event":
            positions.append(message.event.position)
            if len(positions) == 2:
                break
    resumed.cancel()
    assert positions == [position for position, _ in seen[1:]]


def test_bad_input_and_stale_versions_get_the_documented_codes(api):
    from agilepm.planning.v1 import product_pb2
    from agilepm.task.v1 import task_pb2

    with pytest.raises(grpc.RpcError) as bad:
        api.tasks.EstimateTaskHoursRemaining(
            task_pb2.EstimateTaskHoursRemainingRequest(id="not-a-uuid", hours_remaining=1), metadata=TENANT
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details().startswith("id:")

    product = api.products.CreateProduct(
        product_pb2.CreateProductRequest(request_id=rid(), product=product_pb2.Product(name=f"Versions {rid()}")),
        metadata=TENANT,
    ).product
    from google.protobuf import field_mask_pb2

    update = product_pb2.UpdateProductRequest(
        product=product_pb2.Product(id=product.id, description="first"),
        update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        expected_version=product.version,
    )
    assert api.products.UpdateProduct(update, metadata=TENANT).product.version == product.version + 1
    with pytest.raises(grpc.RpcError) as stale:
        api.products.UpdateProduct(update, metadata=TENANT)
    assert stale.value.code() == grpc.StatusCode.ABORTED

    with pytest.raises(grpc.RpcError) as missing:
        api.products.GetProduct(product_pb2.GetProductRequest(id=str(uuid.uuid4())), metadata=TENANT)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_oversized_value_is_a_readable_invalid_argument(api):
    """gRPC core clients refuse trailers over their limit: a long value must come back
    cut short, as INVALID_ARGUMENT, not as RESOURCE_EXHAUSTED from the client itself."""
    from agilepm.events.v1 import feed_pb2
    from agilepm.planning.v1 import product_pb2

    size = 10_000
    huge = "x" * size
    with pytest.raises(grpc.RpcError) as refused:
        api.products.GetProduct(product_pb2.GetProductRequest(id=huge), metadata=TENANT, timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert refused.value.details().startswith("id: not a UUID")
    assert f"({size} bytes)" in refused.value.details()
    assert len(refused.value.details()) < 200

    stream = api.backlog_feed.Subscribe(feed_pb2.SubscribeRequest(after_position=huge), metadata=TENANT, timeout=30)
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(stream))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert refused.value.details().startswith("after_position: malformed feed position")


def test_a_request_past_the_size_limit_is_refused_naming_the_limit(api):
    """Requests are capped at 1 MiB (AGILEPM_MAX_REQUEST_BYTES) before any handler runs."""
    from agilepm.planning.v1 import product_pb2

    huge = "x" * 3_000_000
    with pytest.raises(grpc.RpcError) as refused:
        api.products.GetProduct(product_pb2.GetProductRequest(id=huge), metadata=TENANT, timeout=30)
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE, refused.value.details()
    assert "the limit is: 1048576 bytes" in refused.value.details()
    assert len(refused.value.details()) < 200


def test_roles_and_tokens_are_enforced_for_generated_clients(api):
    from agilepm.backlog.v1 import backlog_item_pb2
    from agilepm.planning.v1 import product_pb2

    # A viewer reads but does not write.
    api.products.ListProducts(product_pb2.ListProductsRequest(), metadata=VIEWER)
    with pytest.raises(grpc.RpcError) as refused:
        api.products.CreateProduct(
            product_pb2.CreateProductRequest(request_id=rid(), product=product_pb2.Product(name="Not mine")),
            metadata=VIEWER,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "needs role product_owner" in refused.value.details()
    # Internal RPCs are closed to tenants, whatever roles they hold.
    with pytest.raises(grpc.RpcError) as refused:
        api.items.ReconcileBacklogItemStatus(
            backlog_item_pb2.ReconcileBacklogItemStatusRequest(
                id=str(uuid.uuid4()), task_hours_remaining=0, task_count=1, task_revision=2**60
            ),
            metadata=TENANT,
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # No token, a plain tenant id, a forged signature: unauthenticated.
    for metadata in ((), (("authorization", "Bearer interop"),), (("authorization", TENANT[0][1] + "x"),)):
        with pytest.raises(grpc.RpcError) as refused:
            api.products.ListProducts(product_pb2.ListProductsRequest(), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
