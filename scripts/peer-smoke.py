#!/usr/bin/env python3
"""Smoke-test the real plugin servers listed in peers.toml over their sockets.

For each selected peer and scenario this script runs the peer's query_cmd
(prints the dump), starts the server with start_cmd in a fresh temporary
prefix, plays the Kong host side of the protocol (MsgPack:1 or ProtoBuf:1,
see docs/protocol.md sections 4 and 5) with canned PDK answers, prints
the wire transcript and checks the result.

It is a developer tool, independent of mock-kong; run it with the peers'
virtualenv, which provides the msgpack package:

    scripts/install-peers.sh
    .peers/python/venv/bin/python scripts/peer-smoke.py                 # all peers, hello
    .peers/python/venv/bin/python scripts/peer-smoke.py -p go -s exit -s faults

Scenarios: hello, bench, exit, multiphase, faults (one per test plugin) and
errors (error replies, driven with the hello plugin). Exit code 0 when every
check passed, 1 otherwise.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

try:
    import tomllib
except ImportError:  # Python < 3.11
    try:
        import tomli as tomllib
    except ImportError:
        sys.exit("peer-smoke: needs Python >= 3.11 (tomllib) or the tomli package to read peers.toml")

try:
    import msgpack
except ImportError:
    sys.exit("peer-smoke: the msgpack package is missing; run it with .peers/python/venv/bin/python "
             "after scripts/install-peers.sh")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = ("hello", "bench", "exit", "multiphase", "faults", "errors")


class Timeout(Exception):
    """The server sent nothing within the read timeout."""


class Closed(Exception):
    """The server closed the connection."""


class CheckFailed(Exception):
    """An expectation of the scenario did not hold."""


def hexdump(data, limit=48):
    """First `limit` bytes of `data` as spaced hex."""
    text = " ".join("%02x" % b for b in data[:limit])
    if len(data) > limit:
        text += " ... (%d bytes)" % len(data)
    return text


def show(value):
    """Compact JSON-like rendering of a decoded MessagePack value."""
    return json.dumps(value, default=lambda v: "<bin %s>" % v.hex() if isinstance(v, bytes) else repr(v),
                      separators=(",", ":"))


# --------------------------------------------------------------------------- fake Kong PDK

class FakeKong:
    """Canned answers for the PDK calls the test plugins make."""

    TERMINAL = ("kong.response.exit", "kong.response.error")

    def __init__(self):
        self.request_headers = {"host": "example.com", "x-loose-data": "this"}
        self.service_headers = {"server": "mock-upstream/1.0.0"}
        self.response_headers = {"x-powered-by": "mock_upstream"}
        self.shared = {}
        self.set_headers = []
        self.notices = []
        self.calls = []
        self.exit = None

    def call(self, method, args):
        """Run one PDK call; returns its result (None = nil)."""
        self.calls.append((method, list(args)))
        if method == "kong.request.get_header":
            return self.request_headers.get(str(args[0]).lower())
        if method == "kong.service.response.get_header":
            return self.service_headers.get(str(args[0]).lower())
        if method == "kong.response.get_header":
            return self.response_headers.get(str(args[0]).lower())
        if method == "kong.response.set_header":
            self.set_headers.append((args[0], args[1]))
            self.response_headers[str(args[0]).lower()] = args[1]
            return None
        if method == "kong.ctx.shared.set":
            self.shared[args[0]] = args[1]
            return None
        if method == "kong.ctx.shared.get":
            return self.shared.get(args[0])
        if method == "kong.log.serialize":
            return json.dumps({"request": {"method": "GET", "uri": "/"}, "response": {"status": 200}},
                              separators=(",", ":"))
        if method.startswith("kong.log."):
            if method == "kong.log.notice":
                self.notices.append(" ".join(str(a) for a in args))
            return None
        if method in self.TERMINAL:
            self.exit = list(args)
            return None
        if method == "kong.request.get_path":
            return "/"
        if method == "kong.client.get_ip":
            return "127.0.0.1"
        if method == "kong.request.get_method":
            return "GET"
        return None


# --------------------------------------------------------------------------- MsgPack:1 host

class MsgPackHost:
    """Kong's MsgPack:1 client side (spec section 4)."""

    def __init__(self, path, out, timeout, fresh_connections):
        self.path = path
        self.out = out
        self.timeout = timeout
        self.fresh = fresh_connections
        self.msgid = 0
        self.conn = None
        self.unpacker = None
        self.received = bytearray()
        self.connections = 0

    def _connect(self):
        if self.conn is not None and not self.fresh:
            return
        self.close()
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(self.timeout)
        self.conn.connect(self.path)
        self.connections += 1
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.received = bytearray()
        self.out("   (connection #%d)" % self.connections)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def read_message(self, timeout=None):
        """Next MessagePack object from the server and its raw bytes."""
        self.conn.settimeout(self.timeout if timeout is None else timeout)
        while True:
            start = self.unpacker.tell()
            try:
                msg = next(self.unpacker)
                return msg, bytes(self.received[start:self.unpacker.tell()])
            except StopIteration:
                pass
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                raise Timeout()
            if not chunk:
                raise Closed()
            self.received += chunk
            self.unpacker.feed(chunk)

    def call(self, method, params):
        """One RPC call; returns (error, result); notifications are printed."""
        self._connect()
        self.msgid += 1
        req = [0, self.msgid, method, params]
        data = msgpack.packb(req, use_bin_type=True)
        self.out(">> %s" % show(req))
        self.out("   bytes: %s" % hexdump(data))
        self.conn.sendall(data)
        while True:
            msg, raw = self.read_message()
            self.out("<< %s" % show(msg))
            self.out("   bytes: %s" % hexdump(raw))
            if isinstance(msg, list) and len(msg) == 3 and msg[0] == 2:
                continue  # notification, e.g. serverPid
            if not (isinstance(msg, list) and len(msg) == 4 and msg[0] == 1):
                raise CheckFailed("expected [1, msgid, error, result], got %s" % show(msg))
            if msg[1] != self.msgid:
                raise CheckFailed("response msgid %r does not match request %d" % (msg[1], self.msgid))
            return msg[2], msg[3]

    def start_instance(self, plugin, config):
        err, res = self.call("plugin.StartInstance", [{"Name": plugin, "Config": json.dumps(config)}])
        if err is not None:
            raise CheckFailed("StartInstance failed: %s" % err)
        return res["Id"]

    def handle_event(self, instance_id, phase, kong, after_terminal=None):
        """HandleEvent and the Step loop; returns "ret", "terminal" or "error: ..."."""
        err, res = self.call("plugin.HandleEvent", [{"InstanceId": instance_id, "EventName": phase}])
        if err is not None:
            return "error: %s" % err
        event_id = res["EventId"]
        while True:
            data = res.get("Data")
            if data == "ret":
                return "ret"
            if not isinstance(data, dict) or "Method" not in data:
                raise CheckFailed("expected Data = \"ret\" or {Method, Args}, got %s" % show(data))
            method = data["Method"]
            args = data.get("Args")
            args = args if isinstance(args, list) else [args]
            result = kong.call(method, args)
            if method in FakeKong.TERMINAL:
                self.out("   (%s: Kong never answers; listening %.1fs for anything unsolicited)"
                         % (method, min(1.0, self.timeout)))
                try:
                    msg, raw = self.read_message(timeout=min(1.0, self.timeout))
                    self.out("<< %s   (unsolicited)" % show(msg))
                except Timeout:
                    self.out("   (nothing)")
                except Closed:
                    self.out("   (server closed the connection)")
                if after_terminal:
                    after_terminal(event_id)
                return "terminal"
            step = {"EventId": event_id}
            if result is not None:
                step["Data"] = result
            err, res = self.call("plugin.Step", [step])
            if err is not None:
                return "error: %s" % err


# --------------------------------------------------------------------------- ProtoBuf:1 host

def varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint((num << 3) | 2) + varint(len(data)) + data


def parse_fields(buf):
    """Protobuf message -> list of (field number, wire type, value)."""
    fields = []
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = read_varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = read_varint(buf, i)
            val, i = bytes(buf[i:i + n]), i + n
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise CheckFailed("unsupported protobuf wire type %d in %s" % (wt, hexdump(buf)))
        fields.append((num, wt, val))
    return fields


def read_varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise CheckFailed("truncated protobuf varint in %s" % hexdump(buf))
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def first(fields, num, default=None):
    for n, _, v in fields:
        if n == num:
            return v
    return default


def decode_value(buf):
    """google.protobuf.Value -> Python value."""
    for num, _, v in parse_fields(buf):
        if num == 1:
            return None
        if num == 2:
            return struct.unpack("<d", v)[0]
        if num == 3:
            return v.decode()
        if num == 4:
            return bool(v)
        if num == 5:
            return decode_struct(v)
        if num == 6:
            return [decode_value(x) for n, _, x in parse_fields(v) if n == 1]
    return None


def decode_struct(buf):
    out = {}
    for num, _, entry in parse_fields(buf):
        if num == 1:
            ef = parse_fields(entry)
            out[first(ef, 1, b"").decode()] = decode_value(first(ef, 2, b""))
    return out


def encode_value(value):
    if value is None:
        return field_varint(1, 1)  # Kong writes null_value = 1
    if isinstance(value, bool):
        return field_varint(4, 1) if value else b""
    if isinstance(value, (int, float)):
        return varint((2 << 3) | 1) + struct.pack("<d", float(value))
    return field_bytes(3, str(value))


# PDK method -> (input decoder, output encoder) for the calls the test plugins make (docs/protocol.md §5.4).
def _in_string(buf):
    return [first(parse_fields(buf), 1, b"").decode()]


def _in_kv(buf):
    f = parse_fields(buf)
    return [first(f, 1, b"").decode(), decode_value(first(f, 2, b""))]


def _in_list(buf):
    return [decode_value(v) for n, _, v in parse_fields(buf) if n == 1]


def _in_exit(buf):
    f = parse_fields(buf)
    headers = first(f, 3)
    return [first(f, 1, 0), first(f, 2, b"").decode(errors="replace"),
            decode_struct(headers) if headers is not None else None]


def _in_empty(buf):
    return []


def _out_string(v):
    return b"" if v is None else field_bytes(1, str(v))


def _out_empty(v):
    return b""


def _out_value(v):
    return encode_value(v)


PB_METHODS = {
    "kong.request.get_header": (_in_string, _out_string),
    "kong.response.get_header": (_in_string, _out_string),
    "kong.service.response.get_header": (_in_string, _out_string),
    "kong.response.set_header": (_in_kv, _out_empty),
    "kong.ctx.shared.set": (_in_kv, _out_empty),
    "kong.ctx.shared.get": (_in_string, _out_value),
    "kong.log.serialize": (_in_empty, _out_string),
    "kong.log.notice": (_in_list, _out_empty),
    "kong.log.err": (_in_list, _out_empty),
    "kong.response.exit": (_in_exit, _out_empty),
    "kong.request.get_path": (_in_empty, _out_string),
    "kong.request.get_method": (_in_empty, _out_string),
    "kong.client.get_ip": (_in_empty, _out_string),
}


class ProtoBufHost:
    """Kong's ProtoBuf:1 client side (spec section 5); sequence starts at 2."""

    def __init__(self, path, out, timeout, fresh_connections):
        self.path = path
        self.out = out
        self.timeout = timeout
        self.fresh = fresh_connections
        self.sequence = 1
        self.conn = None
        self.connections = 0

    def _connect(self):
        if self.conn is not None and not self.fresh:
            return
        self.close()
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(self.timeout)
        self.conn.connect(self.path)
        self.connections += 1
        self.out("   (connection #%d)" % self.connections)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _recv_exact(self, n):
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.conn.recv(n - len(data))
            except socket.timeout:
                raise Timeout()
            if not chunk:
                raise Closed()
            data += chunk
        return bytes(data)

    def read_frame(self, timeout=None):
        self.conn.settimeout(self.timeout if timeout is None else timeout)
        header = self._recv_exact(4)
        (length,) = struct.unpack("<I", header)
        payload = self._recv_exact(length) if length else b""
        return header + payload, payload

    def send_frame(self, payload, label):
        frame = struct.pack("<I", len(payload)) + payload
        self.out(">> %s" % label)
        self.out("   bytes: %s" % hexdump(frame))
        self.conn.sendall(frame)

    def _rpc_call(self, field, body, label):
        self.sequence += 1
        payload = field_varint(1, self.sequence) + field_bytes(field, body)
        self.send_frame(payload, "RpcCall{sequence=%d, %s}" % (self.sequence, label))
        return self.sequence

    def _read_rpc_return(self, sequence):
        raw, payload = self.read_frame()
        f = parse_fields(payload)
        seq = first(f, 1, 0)
        status = first(f, 33)
        desc = "RpcReturn{sequence=%d" % seq
        if status is not None:
            sf = parse_fields(status)
            desc += ", instance_status{name=%r, instance_id=%d, started_at=%d}" % (
                first(sf, 1, b"").decode(), first(sf, 2, 0), first(sf, 4, 0))
        self.out("<< %s}" % desc)
        self.out("   bytes: %s" % hexdump(raw))
        if seq != sequence:
            raise CheckFailed("RpcReturn sequence %d does not echo %d" % (seq, sequence))
        return f

    def start_instance(self, plugin, config):
        self._connect()
        body = field_bytes(1, plugin) + field_bytes(2, json.dumps(config, separators=(",", ":")))
        seq = self._rpc_call(33, body, "cmd_start_instance{name=%r, config=%s}"
                             % (plugin, json.dumps(config, separators=(",", ":"))))
        f = self._read_rpc_return(seq)
        status = first(f, 33)
        if status is None:
            raise CheckFailed("StartInstance reply has no instance_status")
        return first(parse_fields(status), 2, 0)

    def handle_event(self, instance_id, phase, kong, after_terminal=None):
        """HandleEvent conversation; returns "ret", "terminal" or "closed"."""
        self._connect()
        body = field_varint(1, instance_id) + field_bytes(2, phase)
        seq = self._rpc_call(36, body, "cmd_handle_event{instance_id=%d, event_name=%r}" % (instance_id, phase))
        try:
            while True:
                raw, name = self.read_frame()
                if not name:
                    self.out("<< (empty frame: handler done)   bytes: %s" % hexdump(raw))
                    self._read_rpc_return(seq)
                    if self.fresh:
                        self.close()
                    return "ret"
                try:
                    method = name.decode()
                except UnicodeDecodeError:
                    # kong_rs sends its RpcReturn here, without the empty frame before it.
                    raise CheckFailed("expected a PDK method name or the empty end-of-event frame, got %s "
                                      "(an RpcReturn without the empty frame before it? Kong would read "
                                      "it as a method name and wait for its arguments)" % hexdump(raw))
                raw_args, args_buf = self.read_frame()
                decoders = PB_METHODS.get(method)
                if decoders is None:
                    raise CheckFailed("the smoke tool has no decoder for PDK method %s" % method)
                args = decoders[0](args_buf)
                self.out("<< %s%s   bytes: %s | %s" % (method, show(args), hexdump(raw, 28), hexdump(raw_args, 40)))
                result = kong.call(method, args)
                if method in FakeKong.TERMINAL:
                    if after_terminal:
                        after_terminal(None)
                    return "terminal"
                reply = decoders[1](result)
                self.send_frame(reply, "reply %s" % show(result))
        except Closed:
            self.out("   (server closed the connection)")
            self.close()
            return "closed"

    def after_exit(self, _event):
        """After kong.response.exit: Kong never replies. Show what go-pdk does."""
        self.out("   (kong.response.exit: Kong never answers; listening 1.0s)")
        try:
            raw, _ = self.read_frame(timeout=1.0)
            self.out("<< %s   (unsolicited)" % hexdump(raw))
        except Timeout:
            self.out("   (nothing: go-pdk is blocked waiting for the reply)")
        except Closed:
            self.out("   (server closed the connection)")
            return
        self.out("   (probe beyond Kong: answer the exit call with an empty frame)")
        self.send_frame(b"", "empty frame")
        try:
            raw, _ = self.read_frame(timeout=1.0)
            self.out("<< %s" % hexdump(raw))
        except Timeout:
            self.out("   (nothing within 1.0s)")
        except Closed:
            self.out("   (server closed the connection: no done frame, no RpcReturn)")
        self.close()


# --------------------------------------------------------------------------- scenarios

def config_for(plugin, seq, **values):
    """A config like Kong's (docs/protocol.md §4.3): the plugin fields plus the __ keys."""
    config = dict(values)
    config.update({
        "__seq__": seq,
        "__plugin_id": "5f1d4c2e-0000-4000-8000-%012d" % seq,
        "__ws_id": "0b3c6d1e-0000-4000-8000-000000000000",
        "__key__": "plugins:%s::::0b3c6d1e-0000-4000-8000-000000000000" % plugin,
    })
    return config


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def scenario_hello(host, peer, out):
    iid = host.start_instance("hello", config_for("hello", 7, message="hello"))
    out("   instance id: %r" % iid)
    kong = FakeKong()
    result = host.handle_event(iid, "access", kong)
    expect(result == "ret", "expected the handler to finish with ret, got %s" % result)
    expect([m for m, _ in kong.calls] == ["kong.request.get_header", "kong.response.set_header"],
           "expected get_header then set_header, got %s" % kong.calls)
    expect(kong.set_headers == [("x-hello", "hello example.com")],
           "expected set_header x-hello = 'hello example.com', got %s" % kong.set_headers)


def scenario_bench(host, peer, out):
    for seq, calls, method in ((11, 0, "kong.request.get_header"), (12, 4, "kong.request.get_header"),
                               (13, 3, "kong.client.get_ip")):
        out("   -- calls=%d method=%s" % (calls, method))
        iid = host.start_instance("bench", config_for("bench", seq, calls=calls, method=method))
        kong = FakeKong()
        result = host.handle_event(iid, "access", kong)
        expect(result == "ret", "expected ret, got %s" % result)
        want = [method] * (calls - 1) + (["kong.response.set_header"] if calls else [])
        expect([m for m, _ in kong.calls] == want, "expected calls %s, got %s" % (want, kong.calls))
        if calls:
            expect(kong.set_headers == [("x-bench-calls", str(calls))], "bad set_header %s" % kong.set_headers)


def scenario_exit(host, peer, out):
    iid = host.start_instance("exit", config_for("exit", 21, status=418, message="teapot"))
    kong = FakeKong()

    def probe_msgpack(event_id):
        out("   (probe beyond Kong: a Step for event %r after the exit)" % event_id)
        try:
            err, res = host.call("plugin.Step", [{"EventId": event_id}])
            out("   (-> error=%r result=%s)" % (err, show(res)))
        except Timeout:
            out("   (no reply within %.1fs)" % host.timeout)
        except Closed:
            out("   (server closed the connection)")

    after = host.after_exit if isinstance(host, ProtoBufHost) else probe_msgpack
    result = host.handle_event(iid, "access", kong, after_terminal=after)
    expect(result == "terminal", "expected kong.response.exit, got %s" % result)
    status, body, headers = (kong.exit + [None, None, None])[:3]
    expect(status == 418 and body == "teapot", "expected exit(418, 'teapot', ...), got %s" % kong.exit)
    expect(headers in ({"x-exit": "1"}, {"x-exit": ["1"]}), "expected headers x-exit: 1, got %r" % headers)


def scenario_multiphase(host, peer, out):
    iid = host.start_instance("multiphase", config_for("multiphase", 31, message="Kong!"))
    kong = FakeKong()
    for phase in ("access", "response", "log"):
        out("   -- phase %s" % phase)
        result = host.handle_event(iid, phase, kong)
        expect(result == "ret", "phase %s: expected ret, got %s" % (phase, result))
    expect(("x-multi-access", "example.com") in kong.set_headers, "missing x-multi-access: %s" % kong.set_headers)
    expect(("x-multi-response", "got from server 'mock-upstream/1.0.0'") in kong.set_headers,
           "missing x-multi-response: %s" % kong.set_headers)
    expect(kong.notices[:3] == ["shared_msg: Kong!", "request_header: this", "response_header: mock_upstream"],
           "unexpected notices %s" % kong.notices)
    expect(len(kong.notices) == 4 and kong.notices[3].startswith("serialized: {"),
           "unexpected serialized notice %s" % kong.notices)


def scenario_faults(host, peer, out, make_host, proc):
    """Record what a failing handler does; compare with peers.toml handler_errors."""
    declared = peer.get("handler_errors")
    observed = {}
    for seq, mode in ((41, "none"), (42, "raise-after"), (43, "raise-before"), (44, "none")):
        out("   -- mode %s (own connection)" % mode)
        h = make_host()
        try:
            iid = h.start_instance("faults", config_for("faults", seq, mode=mode))
            result = h.handle_event(iid, "access", FakeKong())
        except Timeout:
            result = "timeout"
            out("   (no reply within %.1fs)" % h.timeout)
        except (Closed, ConnectionError, FileNotFoundError) as ex:
            result = "closed"
            out("   (connection failed: %s)" % ex)
        finally:
            h.close()
        time.sleep(0.2)
        alive = proc.poll() is None
        out("   => %s; server process %s" % (result, "alive" if alive else "exited (%s)" % proc.returncode))
        observed[mode if seq != 44 else "none-after"] = (result, alive)
        if not alive:
            break
    out("   observed: %s" % observed)
    expect(observed["none"][0] == "ret", "mode none should finish with ret")
    raised = observed.get("raise-after", ("?", True))
    if declared == "process-exit":
        expect(not raised[1], "declared process-exit but the server survived raise-after")
    elif declared == "event-hangs":
        expect(raised[0] == "timeout", "declared event-hangs but raise-after gave %s" % raised[0])
    elif declared == "ret":
        expect(raised[0] == "ret" and observed.get("raise-before", ("?",))[0] == "ret"
               and observed.get("none-after", ("?",))[0] == "ret", "declared ret but observed %s" % observed)


def scenario_errors(host, peer, out, make_host):
    """Error paths: config without __seq__, unknown instance, unknown event, unknown plugin."""
    out("   -- StartInstance without __seq__ (twice)")
    ids = [host.start_instance("hello", {"message": "hi"}) for _ in range(2)]
    out("   instance ids: %s" % ids)
    if peer.get("instance_ids") == "counter":
        expect(ids[1] == ids[0] + 1, "declared counter ids but got %s" % ids)
    expect(ids[0] != ids[1], "two StartInstance calls returned the same id %s" % ids)
    host.close()

    out("   -- HandleEvent for an unknown instance (own connection)")
    h = make_host()
    try:
        result = h.handle_event(987654, "access", FakeKong())
    except Closed:
        result = "closed"
    finally:
        h.close()
    out("   => %s" % result)
    if peer["protocol"] == "ProtoBuf:1":
        expect(result == "closed", "ProtoBuf: expected the server to close the connection, got %s" % result)
    else:
        expect(result.startswith("error: no plugin instance"), "expected 'no plugin instance', got %s" % result)

    if peer["protocol"] == "MsgPack:1":
        out("   -- Step for an unknown event, StartInstance for an unknown plugin")
        h = make_host()
        try:
            err, _ = h.call("plugin.Step", [{"EventId": 987654, "Data": "x"}])
            expect(err is not None and "not found" in err, "expected 'event id ... not found', got %r" % err)
            err, _ = h.call("plugin.StartInstance", [{"Name": "no-such-plugin", "Config": "{}"}])
            expect(err is not None and "no-such-plugin" in err, "expected an unknown-plugin error, got %r" % err)
            err, _ = h.call("plugin.CloseInstance", [987654])
            expect(err is not None and "no plugin instance" in err, "expected 'no plugin instance', got %r" % err)
        finally:
            h.close()


# --------------------------------------------------------------------------- driver

def expand(template, root, prefix, plugin):
    return template.replace("{root}", root).replace("{prefix}", prefix).replace("{plugin}", plugin)


def run_one(name, peer, scenario, args):
    lines = []

    def out(text):
        lines.append(text)
        print(text, flush=True)

    prefix = tempfile.mkdtemp(prefix="peer-smoke-")
    plugin = "hello" if scenario == "errors" else scenario
    proc = None
    try:
        query = expand(peer["query_cmd"], ROOT, prefix, plugin)
        out("$ %s" % query.replace(ROOT, "{root}"))
        dump = subprocess.run(["/bin/sh", "-c", query], capture_output=True, timeout=60)
        out(dump.stdout.decode(errors="replace").rstrip("\n"))
        info = json.loads(dump.stdout)
        entries = info.get("Plugins", []) if isinstance(info, dict) else info
        names = [e.get("Name") for e in entries]
        expect(plugin in names, "dump does not list plugin %s (got %s)" % (plugin, names))
        if peer.get("dump_lists", "plugin") == "plugin":
            expect(names == [plugin], "dump should list only %s, got %s" % (plugin, names))
        protocol = info.get("Protocol", "MsgPack:1") if isinstance(info, dict) else "MsgPack:1"
        expect(protocol == peer["protocol"], "dump protocol %s != registry %s" % (protocol, peer["protocol"]))

        start = expand(peer["start_cmd"], ROOT, prefix, plugin)
        sock = expand(peer["socket"], ROOT, prefix, plugin)
        out("$ %s" % start.replace(ROOT, "{root}").replace(prefix, "{prefix}"))
        logf = open(os.path.join(prefix, "server.log"), "wb")
        proc = subprocess.Popen(["/bin/sh", "-c", "exec " + start], stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)
        t0 = time.monotonic()
        while True:
            if os.path.exists(sock):
                try:
                    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    probe.connect(sock)
                    probe.close()
                    break
                except OSError:
                    pass
            if proc.poll() is not None:
                raise CheckFailed("server exited with %s before listening" % proc.returncode)
            if time.monotonic() - t0 > 20:
                raise CheckFailed("socket %s did not appear within 20s" % sock)
            time.sleep(0.02)
        out("   (listening after %.2fs; the readiness probe was one connect+close)" % (time.monotonic() - t0))

        host_cls = ProtoBufHost if peer["protocol"] == "ProtoBuf:1" else MsgPackHost

        def make_host():
            return host_cls(sock, out, args.timeout, args.fresh_connections)

        host = make_host()
        try:
            if scenario == "faults":
                scenario_faults(host, peer, out, make_host, proc)
            elif scenario == "errors":
                scenario_errors(host, peer, out, make_host)
            else:
                globals()["scenario_" + scenario](host, peer, out)
        finally:
            host.close()
        out("PASS %s/%s" % (name, scenario))
        return True
    except (CheckFailed, Timeout, Closed, OSError, ValueError, subprocess.TimeoutExpired) as ex:
        out("FAIL %s/%s: %s: %s" % (name, scenario, type(ex).__name__, ex))
        return False
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log_path = os.path.join(prefix, "server.log")
        if args.server_log and os.path.exists(log_path):
            with open(log_path, "rb") as f:
                text = f.read().decode(errors="replace").strip()
            if text:
                print("   --- server output ---\n   " + text.replace("\n", "\n   "))
        shutil.rmtree(prefix, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--peer", action="append", help="peer name from peers.toml (repeatable; default all)")
    parser.add_argument("-s", "--scenario", action="append", choices=SCENARIOS,
                        help="scenario = plugin to drive (repeatable; default hello)")
    parser.add_argument("--timeout", type=float, default=3.0, help="read timeout in seconds (default 3)")
    parser.add_argument("--fresh-connections", action="store_true",
                        help="MsgPack: new connection per call; ProtoBuf: per top-level call")
    parser.add_argument("--server-log", action="store_true", help="print the server's stdout/stderr")
    args = parser.parse_args()

    with open(os.path.join(ROOT, "peers.toml"), "rb") as f:
        registry = tomllib.load(f)
    peers = registry["peers"]
    names = args.peer or list(peers)
    for n in names:
        if n not in peers:
            sys.exit("peer-smoke: unknown peer %r (peers.toml has %s)" % (n, ", ".join(peers)))
    ok = fail = skipped = 0
    for n in names:
        for s in args.scenario or ["hello"]:
            print("=" * 72 + "\n%s / %s\n" % (n, s) + "=" * 72, flush=True)
            plugin = "hello" if s == "errors" else s
            hosted = peers[n].get("plugins")
            if hosted is not None and plugin not in hosted:
                print("SKIP %s/%s: the peer does not host plugin %s (peers.toml plugins: %s)"
                      % (n, s, plugin, ", ".join(hosted)))
                skipped += 1
            elif run_one(n, peers[n], s, args):
                ok += 1
            else:
                fail += 1
    print("%d passed, %d failed, %d skipped" % (ok, fail, skipped))
    return 0 if fail == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
