"""Encrypt throughput and latency of keyorchd as Python grpcio sees it, per concurrency level.

The grpcio counterpart of `keyorch bench encrypt` (src/cli/bench.rs), to set beside it in
docs/benchmarks.md: the same fixture (a temporary vault, CONNECTED internal keystore and
ACTIVE AES-256 key, named bench-py-<suffix>, removed at the end), the same load (Encrypt of
a random --payload, no AAD, back to back, on one channel), warmup then measured seconds per
level, nearest-rank p50/p99, and keyorchd's CPU per call (its pid from the socket's peer
credentials, /proc/PID/stat) and this client's. Messages are built from server reflection,
as in client.py; no keyorch .proto file is used. Unix socket only.

  target/grpc-clients/venv/bin/python tests/grpc_interop/bench_encrypt.py \\
      --socket ~/.local/state/keyorch/keyorch.sock [--concurrency 1,4,16] [--duration 5] \\
      [--warmup 1] [--payload 4096] [--mode aio|threads] [--output table|json] \\
      [--authority localhost]

--mode aio (default): grpc.aio tasks sharing one channel, like keyorch bench's tokio tasks.
--mode threads: blocking calls from OS threads sharing one channel.
"""

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import threading
import time

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT = 30.0
ENCRYPT = "/keyorch.v1.CryptoService/Encrypt"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_socket = os.environ.get("KEYORCH_SOCKET") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "keyorch", "keyorch.sock"
    )
    p.add_argument("--socket", default=default_socket)
    p.add_argument("--concurrency", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--duration", default=5.0, type=float, help="measured seconds per level")
    p.add_argument("--warmup", default=1.0, type=float, help="unmeasured seconds before each level")
    p.add_argument("--payload", default=4096, type=int, help="plaintext bytes")
    p.add_argument("--mode", default="aio", choices=["aio", "threads"])
    p.add_argument("--output", default="table", choices=["table", "json"])
    p.add_argument(
        "--authority",
        help="send this :authority (grpc.default_authority) instead of grpcio's percent-encoded "
        "socket path, e.g. localhost: keyorchd then passes the connection through unrewritten",
    )
    a = p.parse_args(argv)
    if not (1 <= a.payload <= 65536) or a.duration <= 0 or a.warmup < 0 or min(a.concurrency) < 1:
        p.error("payload 1..65536, duration > 0, warmup >= 0, concurrency >= 1")
    return a


class Reflected:
    """Unary calls whose messages come from server reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))

    def classes(self, service, method):
        m = self.pool.FindServiceByName(service).FindMethodByName(method)
        return message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type)

    def call(self, service, method, /, **fields):
        req, resp = self.classes(service, method)
        stub = self.channel.unary_unary(
            f"/{service}/{method}", request_serializer=req.SerializeToString, response_deserializer=resp.FromString
        )
        return stub(req(**fields), timeout=TIMEOUT)

    def enum(self, full_name, value):
        return self.pool.FindEnumTypeByName(full_name).values_by_name[value].number


class Fixture:
    """The vault, keystore and key of one run, removed again in dependency order."""

    def __init__(self, r):
        self.r, self.vault, self.keystore, self.key = r, None, None, None

    def create(self, suffix):
        r, name, desc = self.r, f"bench-py-{suffix}", "temporary, made by tests/grpc_interop/bench_encrypt.py"
        self.vault = r.call("keyorch.v1.VaultService", "CreateVault", name=name, description=desc).id
        ks = r.call(
            "keyorch.v1.KeystoreService",
            "CreateKeystore",
            vault_id=self.vault,
            name=name,
            description=desc,
            type=r.enum("keyorch.v1.KeystoreType", "KEYSTORE_TYPE_INTERNAL"),
            connect=True,
            internal={},
        )
        self.keystore = ks.id
        if ks.connection_state != r.enum("keyorch.v1.ConnectionState", "CONNECTION_STATE_CONNECTED"):
            raise RuntimeError(f"the bench keystore is not CONNECTED: {ks.connection_error_message}")
        key = r.call(
            "keyorch.v1.KeyService",
            "CreateKey",
            vault_id=self.vault,
            name=name,
            description=desc,
            algorithm=r.enum("keyorch.v1.KeyAlgorithm", "KEY_ALGORITHM_AES"),
            key_size_bits=256,
            target_keystore_ids=[ks.id],
            activate=True,
            tags={"purpose": "bench"},
        )
        self.key = key.id
        if key.state != r.enum("keyorch.v1.KeyState", "KEY_STATE_ACTIVE"):
            raise RuntimeError("the bench key is not ACTIVE")
        return key.id

    def remove(self):
        warnings = []

        def attempt(what, service, method, **fields):
            try:
                self.r.call(service, method, **fields)
            except grpc.RpcError as e:
                warnings.append(f"{what}: {e.code().name}: {e.details()}")

        K, KS = "keyorch.v1.KeyService", "keyorch.v1.KeystoreService"
        if self.key:
            attempt("deactivate key", K, "DeactivateKey", id=self.key)
            attempt("destroy key", K, "DestroyKey", id=self.key)
            attempt("delete key", K, "DeleteKey", id=self.key)
        if self.keystore:
            attempt("disconnect keystore", KS, "DisconnectKeystore", id=self.keystore, force=True)
            attempt("delete keystore", KS, "DeleteKeystore", id=self.keystore)
        if self.vault:
            attempt("delete vault", "keyorch.v1.VaultService", "DeleteVault", id=self.vault)
        return warnings


class CpuClock:
    """CPU time (user + system) of keyorchd, found by the socket's peer pid, and of this process."""

    def __init__(self, socket_path):
        self.pid = None
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(socket_path)
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            s.close()
            self.pid = struct.unpack("3i", creds)[0]
        except OSError:
            pass
        self.tick = os.sysconf("SC_CLK_TCK")

    def daemon(self):
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime
        except OSError:
            return None

    def sample(self):
        t = os.times()
        return self.daemon(), t.user + t.system


def percentile(sorted_ns, p):
    if not sorted_ns:
        return 0
    rank = -(-p * len(sorted_ns) // 100)  # nearest rank: ceil(p/100 * n), p an integer
    return sorted_ns[min(max(rank, 1), len(sorted_ns)) - 1]


def summarize(workers):
    """workers: [(latencies_ns, started, finished)] -> dict like keyorch bench's JSON side."""
    started = min(w[1] for w in workers)
    finished = max(w[2] for w in workers)
    lat = sorted(x for w in workers for x in w[0])
    elapsed = max(finished - started, 0.0)
    return {
        "ops": len(lat),
        "elapsed_secs": elapsed,
        "ops_per_sec": len(lat) / elapsed if elapsed > 0 else 0.0,
        "p50_us": percentile(lat, 50) / 1e3,
        "p99_us": percentile(lat, 99) / 1e3,
    }


def level_threads(channel, request_bytes, n, warmup, duration, clock):
    stub = channel.unary_unary(ENCRYPT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    measure_from = time.monotonic() + warmup
    measure_until = measure_from + duration
    results, errors = [None] * n, []

    def worker(i):
        try:
            while time.monotonic() < measure_from:
                stub(request_bytes, timeout=TIMEOUT)
            started, lat = time.monotonic(), []
            while True:
                t0 = time.perf_counter_ns()
                if time.monotonic() >= measure_until:
                    break
                stub(request_bytes, timeout=TIMEOUT)
                lat.append(time.perf_counter_ns() - t0)
            results[i] = (lat, started, time.monotonic())
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(max(measure_from - time.monotonic(), 0))
    cpu_from = clock.sample()
    time.sleep(max(measure_until - time.monotonic(), 0))
    cpu_until = clock.sample()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results, cpu_from, cpu_until


async def level_aio(target, options, request_bytes, n, warmup, duration, clock):
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = channel.unary_unary(ENCRYPT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        measure_from = time.monotonic() + warmup
        measure_until = measure_from + duration

        async def worker():
            while time.monotonic() < measure_from:
                await stub(request_bytes, timeout=TIMEOUT)
            started, lat = time.monotonic(), []
            while True:
                t0 = time.perf_counter_ns()
                if time.monotonic() >= measure_until:
                    break
                await stub(request_bytes, timeout=TIMEOUT)
                lat.append(time.perf_counter_ns() - t0)
            return lat, started, time.monotonic()

        async def clocks():
            await asyncio.sleep(max(measure_from - time.monotonic(), 0))
            a = clock.sample()
            await asyncio.sleep(max(measure_until - time.monotonic(), 0))
            return a, clock.sample()

        *results, (cpu_from, cpu_until) = await asyncio.gather(*[worker() for _ in range(n)], clocks())
        return results, cpu_from, cpu_until


def per_op_us(a, b, ops):
    if a is None or b is None or ops == 0:
        return None
    return (b - a) / ops * 1e6


def render(args, levels):
    if args.output == "json":
        return json.dumps(
            {
                "operation": "encrypt",
                "client": f"grpcio {grpc.__version__} ({args.mode})",
                "authority": args.authority or "socket path (grpcio's default)",
                "payload_bytes": args.payload,
                "warmup_secs": args.warmup,
                "duration_secs": args.duration,
                "levels": levels,
            },
            indent=2,
        )
    ms = lambda us: f"{us / 1e3:.3f} ms"
    cpu = lambda us: "-" if us is None else f"{us:.1f} µs"
    rows = [["level", "keyorchd ops/s", "p50", "p99", "cpu/op keyorchd", "cpu/op client"]]
    for l in levels:
        s = l["keyorchd"]
        rows.append(
            [
                str(l["concurrency"]),
                f"{s['ops_per_sec']:.0f}",
                ms(s["p50_us"]),
                ms(s["p99_us"]),
                cpu(l["cpu_per_op_us"]["keyorchd"]),
                cpu(l["cpu_per_op_us"]["client"]),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    head = (
        f"encrypt via grpcio {grpc.__version__} ({args.mode}"
        f"{', :authority ' + args.authority if args.authority else ''}), {args.payload} B payload, "
        f"{args.warmup:g} s warmup + {args.duration:g} s per level"
    )
    return head + "\n" + "\n".join(lines)


def main(argv):
    args = parse_args(argv)
    target = "unix:" + os.path.abspath(args.socket)
    options = [("grpc.default_authority", args.authority)] if args.authority else []
    channel = grpc.insecure_channel(target, options=options)
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    r = Reflected(channel)
    fixture = Fixture(r)
    levels, failure = [], None
    try:
        key_id = fixture.create(os.urandom(4).hex())
        req_cls, _ = r.classes("keyorch.v1.CryptoService", "Encrypt")
        request_bytes = req_cls(key_id=key_id, plaintext=os.urandom(args.payload)).SerializeToString()
        clock = CpuClock(args.socket)
        for n in args.concurrency:
            if args.mode == "threads":
                results, a, b = level_threads(channel, request_bytes, n, args.warmup, args.duration, clock)
            else:
                results, a, b = asyncio.run(level_aio(target, options, request_bytes, n, args.warmup, args.duration, clock))
            s = summarize(results)
            levels.append(
                {
                    "concurrency": n,
                    "keyorchd": s,
                    "cpu_per_op_us": {
                        "keyorchd": per_op_us(a[0], b[0], s["ops"]),
                        "client": per_op_us(a[1], b[1], s["ops"]),
                    },
                }
            )
            print(f"bench: concurrency {n}: keyorchd {s['ops_per_sec']:.0f} ops/s", file=sys.stderr)
    except (grpc.RpcError, RuntimeError) as e:
        failure = e
    warnings = fixture.remove()
    channel.close()
    for w in warnings:
        print(f"warning: bench cleanup: {w}", file=sys.stderr)
    if failure is not None:
        detail = f"{failure.code().name}: {failure.details()}" if isinstance(failure, grpc.RpcError) else failure
        print(f"error: {detail}", file=sys.stderr)
        return 1
    print(render(args, levels))
    return 1 if warnings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
