"""Fixtures for the Python interop suite.

The client is generated from ../../../proto with grpcio-tools at test time (generated
code is never committed), and the system under test is a real `agilepm dev` on a
temporary data directory, run as production runs it: tokens verified against a secret
(minted with `agilepm token`), and mutual TLS for every server and between services,
with certificates made here. AGILEPM_BIN names the binary (default:
target/debug/agilepm).
"""

import datetime
import ipaddress
import os
import pathlib
import secrets
import subprocess
import sys
import tempfile
import time

import grpc
import pytest
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"
BINARY = os.environ.get("AGILEPM_BIN", str(REPO / "target" / "debug" / "agilepm"))
#: The secret the system under test verifies tokens with: random per run.
SECRET = secrets.token_hex(32)


def mint(*roles: str, tenant: str = "interop", subject: str = "interop-python") -> str:
    """A token from `agilepm token`, as an operator would mint one."""
    args = [BINARY, "token", "--tenant", tenant, "--subject", subject, "--ttl", "1h"]
    for role in roles:
        args += ["--role", role]
    env = {**os.environ, "AGILEPM_AUTH_SECRET": SECRET}
    return subprocess.check_output(args, env=env, text=True).strip()
# Below Linux's ephemeral port range (32768-60999), so no outgoing connection holds them.
PORTS = {"board": 26050, "backlog-item": 26051, "task": 26052, "planning": 26053, "coordinator": 26054, "notifier": 26055}


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


def _certificates(directory: pathlib.Path) -> dict:
    """A CA, and a certificate for 127.0.0.1 signed by it that serves and presents itself
    as a client (the services use it both ways; so does this suite)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agilepm interop CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agilepm")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "cert": leaf.public_bytes(serialization.Encoding.PEM),
        "key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(content)
    return {"paths": paths, "pem": files}


@pytest.fixture(scope="session")
def tls():
    with tempfile.TemporaryDirectory() as directory:
        yield _certificates(pathlib.Path(directory))


@pytest.fixture(scope="session")
def system(generated, tls):
    with tempfile.TemporaryDirectory() as data:
        paths = tls["paths"]
        args = [BINARY, "dev", "--data-dir", data]
        for name, port in PORTS.items():
            args += [f"--{name}-port", str(port)]
        args += ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"])]
        args += ["--tls-client-ca", str(paths["ca"]), "--tls-ca", str(paths["ca"])]
        # Keyed, so the notifier sends to public addresses only unless told otherwise:
        # the README's receiver runs on loopback, which this system allows explicitly.
        env = {
            **os.environ,
            "AGILEPM_AUTH_SECRET": SECRET,
            "AGILEPM_NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8",
        }
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            for line in process.stdout:
                if line.startswith("agilepm dev: all ") and "services up" in line:
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
def channels(system, tls):
    pem = tls["pem"]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pem["ca"], private_key=pem["key"], certificate_chain=pem["cert"]
    )
    opened = {name: grpc.secure_channel(address, credentials) for name, address in system.items()}
    yield opened
    for channel in opened.values():
        channel.close()


#: Metadata every call of the tests carries: a product owner and team member of tenant
#: `interop`, minted by `agilepm token`.
TENANT = (("authorization", "Bearer " + mint("product_owner", "team_member")),)
#: A viewer of the same tenant.
VIEWER = (("authorization", "Bearer " + mint("viewer", subject="interop-viewer")),)
