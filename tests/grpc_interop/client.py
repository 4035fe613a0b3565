"""keyorchd driven by Python grpcio (grpc-core), knowing nothing of keyorch's .proto files.

Every keyorch message is built from server reflection: grpcio-reflection's
ProtoReflectionDescriptorDatabase feeds a protobuf DescriptorPool, and message_factory
makes the classes. The reflection protocol's own messages are grpcio-reflection's (v1alpha;
v1 has the same messages, so they are sent on the v1 path too), the error details are read
with grpcio-status and Google's google.rpc protos. Run by tests/grpc_interop.rs from the
venv scripts/grpc-clients.sh makes.

usage:
  client.py unix SOCKET_PATH
  client.py tls HOST:PORT CA_PEM CERT_PEM KEY_PEM [SERVER_NAME]

Prints `OK grpcio <unix|tls> ...` on success; on any failure a `FAIL grpcio ...` line on
stderr and exit status 1.
"""

import os
import sys
import traceback

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

CLIENT = "grpcio"
TIMEOUT = 30.0
DOMAIN = "keyorch.v1"
EXPECTED_SERVICES = {
    "keyorch.v1.VaultService",
    "keyorch.v1.KeystoreService",
    "keyorch.v1.KeyService",
    "keyorch.v1.CryptoService",
    "keyorch.v1.AuditService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def open_channel(argv):
    """(channel, transport) from the command line."""
    if len(argv) == 2 and argv[0] == "unix":
        # grpc-core >= 1.57 sends the percent-encoded path as :authority here.
        return grpc.insecure_channel("unix:" + os.path.abspath(argv[1])), "unix"
    if len(argv) in (5, 6) and argv[0] == "tls":
        target, ca, cert, key = argv[1:5]
        read = lambda p: open(p, "rb").read()
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
        )
        options = []
        if len(argv) == 6:
            options.append(("grpc.ssl_target_name_override", argv[5]))
        return grpc.secure_channel(target, creds, options=options), "tls"
    raise Failure(__doc__.split("usage:")[1].split("Prints")[0].strip())


def list_services(channel, version):
    """Service names by ServerReflectionInfo's list_services on grpc.reflection.<version>."""
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(
        call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT)
    )
    check(len(responses) == 1, f"{version}: {len(responses)} reflection responses to one request")
    r = responses[0]
    check(
        r.WhichOneof("message_response") == "list_services_response",
        f"{version}: not a list_services_response: {r}",
    )
    return {s.name for s in r.list_services_response.service}


class Reflected:
    """Calls on methods whose request and response classes come from server reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)
        self.stubs = {}

    def message(self, full_name, /, **fields):
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        return cls(**fields)

    def enum(self, full_name, value_name):
        return self.pool.FindEnumTypeByName(full_name).values_by_name[value_name].number

    def method(self, service, name):
        key = (service, name)
        if key not in self.stubs:
            m = self.pool.FindServiceByName(service).FindMethodByName(name)
            req = message_factory.GetMessageClass(m.input_type)
            resp = message_factory.GetMessageClass(m.output_type)
            call = self.channel.unary_unary(
                f"/{service}/{name}",
                request_serializer=req.SerializeToString,
                response_deserializer=resp.FromString,
            )
            self.stubs[key] = (req, call)
        return self.stubs[key]

    def call(self, service, name, /, **fields):
        req, call = self.method(service, name)
        return call(req(**fields), timeout=TIMEOUT)

    def fails(self, service, name, /, **fields):
        """The grpc.RpcError of a call that must fail."""
        try:
            resp = self.call(service, name, **fields)
        except grpc.RpcError as e:
            return e
        raise Failure(f"{service}/{name} succeeded, expected an error: {resp}")


def error_info(err):
    """(code name, message, google.rpc.ErrorInfo) of a failed call's status details."""
    status = rpc_status.from_call(err)
    check(status is not None, f"no grpc-status-details-bin in {err.code()} {err.details()!r}")
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            return err.code().name, status.message, info
    raise Failure(f"no google.rpc.ErrorInfo in the details of {err.code()} {err.details()!r}")


def expect_error(err, code, reason, field=None):
    got_code, message, info = error_info(err)
    desc = f"{got_code} {message!r} reason={info.reason} domain={info.domain} metadata={dict(info.metadata)}"
    check(got_code == code, f"expected {code}/{reason}, got {desc}")
    check(info.reason == reason, f"expected reason {reason}, got {desc}")
    check(info.domain == DOMAIN, f"expected domain {DOMAIN}, got {desc}")
    check(message.strip() != "", f"empty message: {desc}")
    if field is not None:
        check(info.metadata.get("field") == field, f"expected field {field}: {desc}")
    return f"{code}/{reason}"


def tour(r, suffix):
    """The README's tour, and two errors whose details must arrive intact."""
    V, KS, K, C = (f"keyorch.v1.{s}" for s in ("VaultService", "KeystoreService", "KeyService", "CryptoService"))
    errors = []

    err = r.fails(V, "CreateVault", name="bad/name")
    errors.append(expect_error(err, "INVALID_ARGUMENT", "ValidationException", field="name"))

    vault = r.call(V, "CreateVault", name=f"interop-{CLIENT}-{suffix}", description="grpcio interop")
    check(vault.id, f"vault without id: {vault}")

    internal = r.enum("keyorch.v1.KeystoreType", "KEYSTORE_TYPE_INTERNAL")
    connected = r.enum("keyorch.v1.ConnectionState", "CONNECTION_STATE_CONNECTED")
    ks = r.call(
        KS,
        "CreateKeystore",
        vault_id=vault.id,
        name="hsm",
        type=internal,
        connect=False,
        internal=r.message("keyorch.v1.InternalKeystoreConfig"),
    )
    check(ks.WhichOneof("config") == "internal", f"not an internal keystore: {ks}")
    ks = r.call(KS, "ConnectKeystore", id=ks.id)
    check(ks.connection_state == connected, f"keystore not CONNECTED after connect: {ks}")

    key = r.call(
        K,
        "CreateKey",
        vault_id=vault.id,
        name="card-data",
        algorithm=r.enum("keyorch.v1.KeyAlgorithm", "KEY_ALGORITHM_AES"),
        key_size_bits=256,
        target_keystore_ids=[ks.id],
        activate=False,
    )
    check(key.state == r.enum("keyorch.v1.KeyState", "KEY_STATE_PRE_ACTIVE"), f"new key not PRE_ACTIVE: {key}")
    key = r.call(K, "ActivateKey", id=key.id)
    check(key.state == r.enum("keyorch.v1.KeyState", "KEY_STATE_ACTIVE"), f"key not ACTIVE: {key}")

    plaintext, aad = f"hello, HSM, from {CLIENT}".encode(), b"order-42"
    ct = r.call(C, "Encrypt", key_id=key.id, plaintext=plaintext, aad=aad).ciphertext
    # 12-byte IV || ciphertext || 16-byte tag
    check(len(ct) == 12 + len(plaintext) + 16, f"ciphertext of {len(ct)} bytes")
    pt = r.call(C, "Decrypt", key_id=key.id, ciphertext=ct, aad=aad).plaintext
    check(pt == plaintext, f"Decrypt gave {pt!r}, expected {plaintext!r}")
    err = r.fails(C, "Decrypt", key_id=key.id, ciphertext=ct, aad=b"order-43")
    errors.append(expect_error(err, "INVALID_ARGUMENT", "InvalidCiphertextException"))

    # The emergency switch: a disconnected keystore cuts every use of its keys.
    r.call(KS, "DisconnectKeystore", id=ks.id, force=True)
    err = r.fails(C, "Encrypt", key_id=key.id, plaintext=b"nope")
    errors.append(expect_error(err, "FAILED_PRECONDITION", "CustomKeyStoreInvalidStateException"))
    r.call(KS, "ConnectKeystore", id=ks.id)
    pt = r.call(C, "Decrypt", key_id=key.id, ciphertext=ct, aad=aad).plaintext
    check(pt == plaintext, "Decrypt after reconnecting did not round-trip")
    return len(plaintext), errors


def main(argv):
    channel, transport = open_channel(argv)
    with channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        # Each reflection version lists every service: keyorch's, health and both
        # reflection versions.
        for version in ("v1", "v1alpha"):
            names = list_services(channel, version)
            missing = EXPECTED_SERVICES - names
            check(not missing, f"reflection {version} does not list {sorted(missing)} (listed: {sorted(names)})")
            check(names == EXPECTED_SERVICES, f"reflection {version} lists unexpected services: {sorted(names - EXPECTED_SERVICES)}")
        union = EXPECTED_SERVICES

        r = Reflected(channel)
        # The v1alpha descriptor database's own listing, as grpcio users call it.
        check(EXPECTED_SERVICES == set(r.db.get_services()), "ProtoReflectionDescriptorDatabase.get_services")
        health = r.call("grpc.health.v1.Health", "Check", service="")
        serving = r.enum("grpc.health.v1.HealthCheckResponse.ServingStatus", "SERVING")
        check(health.status == serving, f"health status {health.status}, expected SERVING")
        health = r.call("grpc.health.v1.Health", "Check", service="keyorch.v1.CryptoService")
        check(health.status == serving, "keyorch.v1.CryptoService is not SERVING")

        n, errors = tour(r, os.urandom(4).hex())
    print(
        f"OK {CLIENT} {transport} services={len(union)} health=SERVING "
        f"roundtrip={n} errors={','.join(errors)}"
    )


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except grpc.RpcError as e:
        traceback.print_exc()
        print(f"FAIL {CLIENT}: RPC error {e.code()}: {e.details()}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        traceback.print_exc()
        print(f"FAIL {CLIENT}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
