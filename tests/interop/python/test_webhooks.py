"""The README's webhook receiver (docs/webhook_receiver.py) against the real notifier:
subscribed with a generated client, it verifies the signed delivery of a sprint start."""

import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import uuid

from conftest import TENANT

RECEIVER = pathlib.Path(__file__).resolve().parents[3] / "docs" / "webhook_receiver.py"


def day(offset: int) -> str:
    return (datetime.datetime.now(datetime.timezone.utc).date() + datetime.timedelta(days=offset)).isoformat()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_receiver_verifies_a_signed_delivery(channels):
    from agilepm.notifier.v1 import notifier_pb2, notifier_pb2_grpc
    from agilepm.planning.v1 import product_pb2, product_pb2_grpc, sprint_pb2, sprint_pb2_grpc

    port = free_port()
    notifier = notifier_pb2_grpc.NotifierServiceStub(channels["notifier"])
    created = notifier.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(
            request_id=str(uuid.uuid4()),
            target_url=f"http://127.0.0.1:{port}/hook",
            notification_types=[notifier_pb2.NOTIFICATION_TYPE_SPRINT_STARTED],
        ),
        metadata=TENANT,
    )
    assert created.signing_secret.startswith("whsec_")
    receiver = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "WEBHOOK_SECRET": created.signing_secret},
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the receiver did not listen"
                time.sleep(0.05)
        products = product_pb2_grpc.ProductServiceStub(channels["planning"])
        sprints = sprint_pb2_grpc.SprintServiceStub(channels["planning"])
        product = products.CreateProduct(
            product_pb2.CreateProductRequest(
                request_id=str(uuid.uuid4()), product=product_pb2.Product(name=f"Hooks {uuid.uuid4()}")
            ),
            metadata=TENANT,
        ).product
        sprint = sprints.ScheduleSprint(
            sprint_pb2.ScheduleSprintRequest(
                request_id=str(uuid.uuid4()),
                sprint=sprint_pb2.Sprint(product_id=product.id, name="S", begin_date=day(0), end_date=day(9)),
            ),
            metadata=TENANT,
        ).sprint
        sprints.StartSprint(sprint_pb2.StartSprintRequest(id=sprint.id), metadata=TENANT)
        lines = []
        reader = threading.Thread(target=lambda: lines.append(receiver.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert lines and lines[0], "no verified delivery within 30 s"
        told = json.loads(lines[0])
        assert told["type"] == "sprint.started"
        assert told["data"]["sprint_id"] == sprint.id
        assert told["webhook_id"] == told["data"]["event_id"]
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
