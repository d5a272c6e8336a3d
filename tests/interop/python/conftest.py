"""Fixtures for the Python interop suite.

The client is generated from ../../../proto with grpcio-tools at test time (generated
code is never committed), and the system under test is a real `agilepm dev` on a
temporary data directory. AGILEPM_BIN names the binary (default: target/debug/agilepm).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"
# Below Linux's ephemeral port range (32768-60999), so no outgoing connection holds them.
PORTS = {"backlog-item": 26051, "task": 26052, "planning": 26053, "coordinator": 26054}


def _generate(out: pathlib.Path) -> None:
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO)) for p in sorted(PROTO.rglob("*.proto"))]
    args = ["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError("grpcio-tools could not compile proto/")
    # Generated packages import each other as agilepm.<area>.v1.*: make them packages.
    for directory in [out, *[d for d in out.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()


@pytest.fixture(scope="session")
def generated():
    with tempfile.TemporaryDirectory() as out:
        _generate(pathlib.Path(out))
        sys.path.insert(0, out)
        yield pathlib.Path(out)
        sys.path.remove(out)


@pytest.fixture(scope="session")
def system(generated):
    binary = os.environ.get("AGILEPM_BIN", str(REPO / "target" / "debug" / "agilepm"))
    with tempfile.TemporaryDirectory() as data:
        args = [binary, "dev", "--data-dir", data]
        for name, port in PORTS.items():
            args += [f"--{name}-port", str(port)]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + 60
            for line in process.stdout:
                if line.startswith("agilepm dev: four services up"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("agilepm dev did not start")
            else:
                raise RuntimeError(f"agilepm dev exited with {process.wait()}")
            yield {name: f"127.0.0.1:{port}" for name, port in PORTS.items()}
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def channels(system):
    opened = {name: grpc.insecure_channel(address) for name, address in system.items()}
    yield opened
    for channel in opened.values():
        channel.close()


#: Metadata every call of the tests carries: the tenant (development mode).
TENANT = (("authorization", "Bearer interop"),)
