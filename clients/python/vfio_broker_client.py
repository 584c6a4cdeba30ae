#!/usr/bin/env python3
"""Interop client for vfio-broker, written only from the .proto contract (proto/vfiobroker/v1).

It proves the API is language-neutral: Python stubs are generated from proto/ at run time with
grpc_tools.protoc (kept in ~/.cache/vfio-broker/py-<hash of the .proto files> for the next run,
when that directory is this user's alone; else in a temporary directory), then it drives the same
flow as the Node client: Hello -> ListDevices -> OpenDevice -> CreateMapping -> fd channel (framed
FdRequest, SCM_RIGHTS via socket.recv_fds) -> mmap. It never leaks a received fd: every fd of a
truncated or refused reply is closed, and the backing fd is closed right after mmap (the mapping
keeps the memory).

Needs Debian's python3-grpcio and python3-grpc-tools, which install for /usr/bin/python3:

    /usr/bin/python3 clients/python/vfio_broker_client.py --socket S map sim0 2 \
        --length 4096 --attr wc --write 0=deadbeef --read 0:16 --json
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib
import json
import mmap
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile

PROG = "vfio-broker-py"
DEFAULT_SOCKET = "/run/vfio-broker/broker.sock"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
MAX_REPLY_BYTES = 64 * 1024
MSG_CMSG_CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0x40000000)


class UsageError(Exception):
    """A bad command line (exit 2)."""


class FdChannelError(Exception):
    """The fd channel refused a ticket or the delivery failed. status: "EXPIRED", "WRONG_PEER", ..."""

    def __init__(self, status: str, details: str):
        super().__init__(f"fd channel: {details} ({status})")
        self.status = status
        self.details = details


# --- protobuf stubs, generated at run time ------------------------------------------------------


def _private_dir(path: str) -> bool:
    """path is a directory of ours that nobody else may write (we import Python code from it)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o022


def _stub_cache(proto_dir: str, files: list[str]) -> str | None:
    """Where stubs generated from exactly these .proto files are kept between runs (protoc costs
    about 200 ms of a cold start): $XDG_CACHE_HOME/vfio-broker/py-<sha256 of the files>, only in a
    cache directory this user owns and nobody else can write. None: no usable cache (generate
    into a temporary directory), or VFIO_BROKER_PY_NO_CACHE is set."""
    if os.environ.get("VFIO_BROKER_PY_NO_CACHE"):
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + b"\0")
        with open(os.path.join(proto_dir, f), "rb") as fh:
            h.update(fh.read())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "vfio-broker")
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not _private_dir(base) or not _private_dir(root):
        return None
    return os.path.join(root, f"py-{h.hexdigest()[:32]}")


class Proto:
    """The generated modules: types_pb2, broker_pb2, broker_pb2_grpc, fdchannel_pb2."""

    def __init__(self, proto_dir: str):
        files = sorted(
            os.path.join("vfiobroker", "v1", f)
            for f in os.listdir(os.path.join(proto_dir, "vfiobroker", "v1"))
            if f.endswith(".proto")
        )
        cache = _stub_cache(proto_dir, files)
        if cache is not None and _private_dir(cache):
            out = cache
        else:
            out = tempfile.mkdtemp(prefix="vfio-broker-py-", dir=os.path.dirname(cache) if cache else None)
            cmd = [
                sys.executable, "-m", "grpc_tools.protoc", "-I", proto_dir,
                f"--python_out={out}", f"--grpc_python_out={out}", *files,
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                shutil.rmtree(out, True)
                raise RuntimeError(f"grpc_tools.protoc failed on {proto_dir}: {res.stderr.strip()}")
            if cache is not None:
                try:
                    # Complete stubs appear under their final name in one step (another run may race us).
                    os.rename(out, cache)
                    out = cache
                except OSError:
                    pass
            if out != cache:
                atexit.register(shutil.rmtree, out, True)
        sys.path.insert(0, out)
        self.types = importlib.import_module("vfiobroker.v1.types_pb2")
        self.broker = importlib.import_module("vfiobroker.v1.broker_pb2")
        self.broker_grpc = importlib.import_module("vfiobroker.v1.broker_pb2_grpc")
        self.fdchannel = importlib.import_module("vfiobroker.v1.fdchannel_pb2")

    def enum_name(self, enum: str, value: int, prefix: str) -> str:
        """Attribute 2 -> "wc" (the enum value name without its prefix, lower case)."""
        name = getattr(self.types, enum).Name(value)
        return name[len(prefix):].lower().replace("_", "-") if name.startswith(prefix) else name.lower()


# --- the fd channel -----------------------------------------------------------------------------


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def fd_socket_candidates(broker_socket: str, fd_socket_name: str, fd_socket_path: str) -> list[str]:
    """Where to look for the fd channel, in order. The socket directory may be mounted anywhere (a
    container's bind mount), so fd_socket_name next to the broker socket comes first, then the path
    brokerd advertised (its own host path). With no name (sockets in different directories, or an
    older brokerd) the advertised path comes first and "fd.sock" beside the broker socket last."""
    here = os.path.dirname(broker_socket)
    if fd_socket_name and "/" not in fd_socket_name:
        order = [os.path.join(here, fd_socket_name), fd_socket_path]
    else:
        order = [fd_socket_path, os.path.join(here, "fd.sock")]
    out: list[str] = []
    for p in order:
        if p and p not in out:
            out.append(p)
    return out


def _connect_first(paths: list[str], timeout: float):
    """A socket connected to the first of `paths` that accepts, and that path."""
    failures = []
    for path in paths:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s, path
        except OSError as e:
            s.close()
            failures.append((path, e))
    if len(failures) == 1:
        path, e = failures[0]
        raise FdChannelError("CONNECT", f"cannot connect to {path}: {e.strerror}") from e
    tried = "; ".join(f"{p}: {e.strerror}" for p, e in failures)
    raise FdChannelError(
        "CONNECT",
        f"cannot reach the fd channel ({tried}); is its whole socket directory mounted here? (or set VFIO_BROKER_FD_SOCKET)",
    ) from failures[-1][1]


def fetch_fd(pb: Proto, fd_socket_path, ticket: str, timeout: float = 10.0):
    """Presents `ticket` on the fd channel; returns (FdReply, fd). The caller closes fd.
    fd_socket_path: one path, or candidates (fd_socket_candidates) tried in order."""
    paths = [fd_socket_path] if isinstance(fd_socket_path, str) else list(fd_socket_path)
    reply, fd, _ = _fetch_fd(pb, paths, ticket, timeout)
    return reply, fd


def _fetch_fd(pb: Proto, paths: list[str], ticket: str, timeout: float = 10.0):
    """fetch_fd, also returning the path that accepted."""
    s, fd_socket_path = _connect_first(paths, timeout)
    received: list[int] = []
    try:
        payload = pb.fdchannel.FdRequest(ticket=ticket).SerializeToString()
        s.sendall(struct.pack(">I", len(payload)) + payload)
        buf = b""
        need = None
        while need is None or len(buf) < need:
            # maxfds 4: a reply carrying more than the one fd it may carry is detected, not truncated.
            data, fds, flags, _ = socket.recv_fds(s, MAX_REPLY_BYTES + 4, 4, MSG_CMSG_CLOEXEC)
            received.extend(fds)
            if flags & socket.MSG_CTRUNC:
                raise FdChannelError("PROTOCOL", "the reply's control data was truncated; its fds were closed")
            if fds and buf:
                raise FdChannelError("PROTOCOL", "fds arrived in the middle of the reply; they were closed")
            if not data:
                raise FdChannelError("PROTOCOL", "the broker closed the fd channel before a whole reply arrived")
            buf += data
            if need is None and len(buf) >= 4:
                length = struct.unpack(">I", buf[:4])[0]
                if length > MAX_REPLY_BYTES:
                    raise FdChannelError("PROTOCOL", f"the broker sent a {length}-byte reply; the limit is {MAX_REPLY_BYTES}")
                need = 4 + length
        if len(buf) > need:
            raise FdChannelError("PROTOCOL", "the broker sent more than one reply")
        reply = pb.fdchannel.FdReply()
        reply.ParseFromString(buf[4:need])
        if reply.status != pb.fdchannel.FD_STATUS_OK:
            status = pb.fdchannel.FdStatus.Name(reply.status).removeprefix("FD_STATUS_")
            raise FdChannelError(status, reply.message or "the broker refused the ticket")
        if len(received) != 1:
            raise FdChannelError("PROTOCOL", f"an OK reply must carry exactly one fd, it carried {len(received)}")
        fd = received.pop()
        return reply, fd, fd_socket_path
    except socket.timeout as e:
        raise FdChannelError("TIMEOUT", f"no reply from {fd_socket_path} within {timeout} s") from e
    finally:
        _close_all(received)
        s.close()


# --- the broker ---------------------------------------------------------------------------------


class BrokerClient:
    """One gRPC connection to brokerd (= one session), with Hello already done."""

    def __init__(self, pb: Proto, socket_path: str, fd_socket: str | None = None):
        import grpc  # noqa: PLC0415 (imported late so --help works without python3-grpcio)

        self.grpc = grpc
        self.pb = pb
        self.socket_path = socket_path
        try:
            st = os.stat(socket_path)
        except FileNotFoundError:
            raise ConnectionError(f"brokerd isn't running at {socket_path} (no socket there)") from None
        except PermissionError:
            raise ConnectionError(f"cannot reach {socket_path}: permission denied on its directory") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise ConnectionError(f"{socket_path} is not a socket; brokerd is not running there")
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = pb.broker_grpc.BrokerServiceStub(self.channel)
        self.hello = self.stub.Hello(pb.broker.HelloRequest(client_name=PROG, client_version="0.1.0"), timeout=10)
        explicit = fd_socket or os.environ.get("VFIO_BROKER_FD_SOCKET")
        caps = self.hello.capabilities
        # Where the fd channel may be: the explicit path only, else next to socket_path first.
        self.fd_sockets = [explicit] if explicit else fd_socket_candidates(
            socket_path, getattr(caps, "fd_socket_name", ""), caps.fd_socket_path
        )
        self.fd_socket = self.fd_sockets[0]

    def fetch_fd(self, ticket: str):
        """fetch_fd on this client's fd channel; sticks to the first candidate that accepted."""
        reply, fd, used = _fetch_fd(self.pb, self.fd_sockets, ticket)
        self.fd_socket = used
        self.fd_sockets = [used]
        return reply, fd

    def list_devices(self):
        return list(self.stub.ListDevices(self.pb.broker.ListDevicesRequest(), timeout=10).devices)

    def open_device(self, device_id: str, layout: str | None):
        layouts = {None: 0, "legacy": self.pb.types.LAYOUT_LEGACY, "compact": self.pb.types.LAYOUT_COMPACT}
        return self.stub.OpenDevice(self.pb.broker.OpenDeviceRequest(device_id=device_id, layout=layouts[layout]), timeout=10)

    def create_mapping(self, device_file_id, region_index, offset, length, attr, prot, allow_fallback):
        t = self.pb.types
        req = self.pb.broker.CreateMappingRequest(
            device_file_id=device_file_id,
            region_index=region_index,
            offset=offset,
            length=length,
            attribute={"uc": t.ATTRIBUTE_UC, "wc": t.ATTRIBUTE_WC}[attr],
            prot={"r": t.PROT_READ, "rw": t.PROT_READ_WRITE}[prot],
            allow_fallback=allow_fallback,
        )
        return self.stub.CreateMapping(req, timeout=10)

    def release_mapping(self, device_file_id, cookie):
        self.stub.ReleaseMapping(self.pb.broker.ReleaseMappingRequest(device_file_id=device_file_id, cookie=cookie), timeout=10)

    def close_device(self, device_file_id):
        self.stub.CloseDevice(self.pb.broker.CloseDeviceRequest(device_file_id=device_file_id), timeout=10)

    def close(self):
        self.channel.close()


def map_fd(fd: int, offset: int, length: int, prot: str) -> mmap.mmap:
    """mmap(MAP_SHARED) of the backing fd, then closes the fd (the mapping keeps the memory)."""
    try:
        p = mmap.PROT_READ | (mmap.PROT_WRITE if prot == "rw" else 0)
        return mmap.mmap(fd, length, flags=mmap.MAP_SHARED, prot=p, offset=offset)
    finally:
        os.close(fd)


# --- command line -------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def parse_number(text: str, what: str = "number") -> int:
    """4096, 0x1000, 4K, 1M, 2G (K = 1024)."""
    m = re.fullmatch(r"(0x[0-9a-fA-F]+|[0-9]+)\s*(k|kib|m|mib|g|gib)?", text.strip(), re.IGNORECASE)
    if not m:
        raise UsageError(f"{what} {text!r} is not a number; use decimal (4096), hex (0x1000) or a K/M/G suffix (4K)")
    return int(m.group(1), 0) * _UNITS[(m.group(2) or "").lower()]


def parse_hex(text: str, what: str) -> bytes:
    s = re.sub(r"[\s:_-]", "", text.strip().removeprefix("0x").removeprefix("0X"))
    if not s or len(s) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", s):
        raise UsageError(f"{what} {text!r} is not whole hex bytes; give e.g. deadbeef")
    return bytes.fromhex(s)


class _Op(argparse.Action):
    """--write and --read append to one list, so they run in command-line order."""

    def __call__(self, parser, namespace, value, option_string=None):
        ops = getattr(namespace, "ops", None) or []
        ops.append((self.dest, value))
        namespace.ops = ops


def parse_ops(raw):
    ops = []
    for kind, spec in raw or []:
        if kind == "write":
            off, eq, data = spec.partition("=")
            if not eq:
                raise UsageError(f"--write {spec!r} needs OFF=HEX, e.g. --write 0x10=deadbeef")
            ops.append(("write", parse_number(off, "--write offset"), parse_hex(data, "--write data")))
        else:
            off, colon, length = spec.partition(":")
            ops.append(("read", parse_number(off, "--read offset"), parse_number(length, "--read length") if colon else 16))
    return ops


def find_region(regions, spec: str):
    s = spec.strip()
    for rc in regions:
        if (s.isdigit() and rc.region.index == int(s)) or rc.region.name.lower() == s.lower():
            return rc
    have = ", ".join(f"{rc.region.name} ({rc.region.index})" for rc in regions)
    raise UsageError(f"no region {spec!r}; the device has {have}")


def cmd_devices(client: BrokerClient, pb: Proto, args) -> dict:
    out = []
    for d in client.list_devices():
        out.append({
            "id": d.id,
            "backend": d.backend,
            "vendorId": d.vendor_id,
            "deviceId": d.device_id,
            "description": d.description,
            "health": pb.enum_name("DeviceHealth", d.health, "DEVICE_HEALTH_"),
            "regions": [{"index": r.index, "name": r.name, "size": str(r.size)} for r in d.regions],
        })
    return {"devices": out}


def cmd_map(client: BrokerClient, pb: Proto, args) -> dict:
    ops = parse_ops(getattr(args, "ops", None))
    opened = client.open_device(args.device, args.layout)
    dfid = opened.device_file_id
    try:
        rc = find_region(opened.regions, args.region)
        offset = parse_number(args.offset, "--offset") if args.offset else 0
        length = parse_number(args.length, "--length") if args.length else rc.region.size - offset
        for kind, off, x in ops:
            n = len(x) if kind == "write" else x
            if off + n > length:
                raise UsageError(f"--{kind} at {off:#x} ({n} bytes) is outside the {length}-byte mapping")
        res = client.create_mapping(dfid, rc.region.index, offset, length, args.attr, args.prot, args.allow_fallback)
        m = res.mapping
        try:
            reply, fd = client.fetch_fd(res.ticket)
            mm = map_fd(fd, reply.mmap_offset, reply.length, args.prot)
        except BaseException:
            client.release_mapping(dfid, m.cookie)
            raise
        writes, reads = [], []
        try:
            for kind, off, x in ops:
                if kind == "write":
                    mm[off:off + len(x)] = x
                    writes.append({"offset": off, "length": len(x), "data": x.hex()})
                else:
                    reads.append({"offset": off, "length": x, "hex": bytes(mm[off:off + x]).hex()})
        finally:
            mm.close()
            client.release_mapping(dfid, m.cookie)
        ident = client.hello.identity
        return {
            "client": "python",
            "sessionId": client.hello.session_id,
            "identity": {
                "uid": ident.uid,
                "gid": ident.gid,
                "pid": ident.pid,
                "containerId": getattr(ident, "container_id", ""),
                "containerRuntime": getattr(ident, "container_runtime", ""),
                "podUid": getattr(ident, "pod_uid", ""),
                "qosClass": getattr(ident, "qos_class", ""),
            },
            "fdSocket": client.fd_socket,
            "deviceId": args.device,
            "deviceFileId": str(dfid),
            "cookie": str(m.cookie),
            "region": {"index": m.region_index, "name": m.region_name},
            "offset": str(m.region_offset),
            "length": int(reply.length),
            "mmapOffset": str(reply.mmap_offset),
            "requestedAttribute": args.attr,
            "effectiveAttribute": pb.enum_name("Attribute", reply.effective_attribute, "ATTRIBUTE_"),
            "fallbackReason": m.fallback_reason,
            "backing": pb.enum_name("BackingKind", reply.backing, "BACKING_KIND_"),
            "prot": args.prot,
            "writes": writes,
            "reads": reads,
        }
    finally:
        try:
            client.close_device(dfid)
        except Exception:  # noqa: BLE001 (best effort; the session ends with the connection anyway)
            pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="vfio-broker interop client (Python, grpcio)")
    p.add_argument("--socket", default=os.environ.get("VFIO_BROKER_SOCKET", DEFAULT_SOCKET), help="brokerd's gRPC socket")
    p.add_argument("--fd-socket", default=None, help="the fd channel socket (default: what Hello says)")
    p.add_argument("--proto-dir", default=os.environ.get("VFIO_BROKER_PROTO_DIR", DEFAULT_PROTO_DIR),
                   help="directory holding vfiobroker/v1/*.proto (default: the repository's proto/)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("devices", help="list the devices you may open")
    m = sub.add_parser("map", help="map a region range, access it through the mmap, release it")
    m.add_argument("device")
    m.add_argument("region", help="BAR2, bar2 or 2")
    m.add_argument("--offset")
    m.add_argument("--length")
    m.add_argument("--attr", choices=["uc", "wc"], default="uc")
    m.add_argument("--prot", choices=["r", "rw"], default="rw")
    m.add_argument("--layout", choices=["legacy", "compact"], default=None)
    m.add_argument("--allow-fallback", action="store_true")
    m.add_argument("--write", action=_Op, metavar="OFF=HEX", help="write hex bytes at OFF (repeatable)")
    m.add_argument("--read", action=_Op, metavar="OFF[:LEN]", help="read LEN (16) bytes at OFF (repeatable)")
    # --json is also accepted after the subcommand, as in the Node CLI
    for sp in (m, sub.choices["devices"]):
        sp.add_argument("--json", action="store_true", dest="json_sub")
    return p


def print_human(result: dict) -> None:
    if "devices" in result:
        for d in result["devices"]:
            print(f"{d['id']}  {d['backend']}  {d['vendorId']:04x}:{d['deviceId']:04x}  {d['health']}  {d['description']}")
        return
    region = result["region"]
    rows = [
        ("device file", f"{result['deviceFileId']} ({result['deviceId']})"),
        ("cookie", hex(int(result["cookie"]))),
        ("region", f"{region['name']} (index {region['index']})"),
        ("offset", hex(int(result["offset"]))),
        ("length", str(result["length"])),
        ("attribute", f"requested {result['requestedAttribute']}, effective {result['effectiveAttribute']}"),
        ("fallback", result["fallbackReason"] or "-"),
        ("backing", f"{result['backing']} (prot {result['prot']})"),
    ]
    rows += [("wrote", f"{w['length']} byte(s) at {w['offset']:#x}") for w in result["writes"]]
    rows += [(f"read {r['offset']:#x}", r["hex"]) for r in result["reads"]]
    width = max(len(k) for k, _ in rows) + 1
    for k, v in rows:
        print(f"{k + ':':<{width}}  {v}")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error
        return 2 if e.code else 0
    as_json = args.json or getattr(args, "json_sub", False)
    client = None
    try:
        pb = Proto(args.proto_dir)
        client = BrokerClient(pb, args.socket, args.fd_socket)
        result = cmd_devices(client, pb, args) if args.cmd == "devices" else cmd_map(client, pb, args)
        if as_json:
            print(json.dumps(result))
        else:
            print_human(result)
        return 0
    except UsageError as e:
        print(f"{PROG}: {e}; see {PROG} --help", file=sys.stderr)
        return 2
    except ConnectionError as e:
        print(f"{PROG}: {e}; start brokerd, or point at it with --socket PATH or VFIO_BROKER_SOCKET", file=sys.stderr)
        return 1
    except FdChannelError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001
        import grpc  # noqa: PLC0415

        if isinstance(e, grpc.RpcError):
            print(f"{PROG}: {e.details()} ({e.code().name})", file=sys.stderr)
            return 1
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
