"""
A small PostgreSQL v3 wire client for tests: raw sockets, so a test can
see getpeername(), choose the socket family, send malformed packets and
read exactly what came back.

Imported by the tests, and also run inside the test cgroup as
`python3 -c SOURCE SPEC_JSON`; it then prints one JSON result. The spec:

  host, port            where to connect (the address the workload uses)
  family                "inet" or "inet6" (default: from the host)
  v6only                IPV6_V6ONLY for inet6 sockets (default: 0, dual stack)
  raw_hex               bytes to send first, as hex
  startup               {param: value} of a StartupMessage to send
  queries               simple queries to run once the server is ready
  close_after_send      close right after sending, reading nothing
  timeout               seconds for each socket operation (default 10)

The result has pid, sockname, peername, connect_error (errno name),
messages ([{type, ...}]), eof (the peer closed) and read_error.
Stdlib only: it runs under /usr/bin/python3 as any user.
"""

import errno
import json
import os
import socket
import struct
import sys

PROTOCOL_V3 = 196608
TERMINATE = b"X\x00\x00\x00\x04"


def startup_message(params):
    body = struct.pack("!I", PROTOCOL_V3)
    for key, value in params.items():
        body += key.encode() + b"\0" + str(value).encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def error_fields(body):
    """{'C': '08P01', 'M': '...', ...} of an ErrorResponse/NoticeResponse."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def describe(mtype, body):
    msg = {"type": mtype}
    if mtype in ("E", "N"):
        msg["fields"] = error_fields(body)
    elif mtype == "R" and len(body) >= 4:
        msg["auth"] = struct.unpack("!I", body[:4])[0]
    elif mtype == "Z" and body:
        msg["status"] = chr(body[0])
    elif mtype == "D" and len(body) >= 2:
        (n,) = struct.unpack("!H", body[:2])
        cols, off = [], 2
        for _ in range(n):
            (length,) = struct.unpack("!i", body[off:off + 4])
            off += 4
            if length < 0:
                cols.append(None)
            else:
                cols.append(body[off:off + length].decode(errors="replace"))
                off += length
        msg["columns"] = cols
    elif mtype == "S":
        parts = body.split(b"\0")
        msg["name"] = parts[0].decode(errors="replace")
        msg["value"] = parts[1].decode(errors="replace") if len(parts) > 1 else ""
    return msg


class Reader:
    """Whole backend messages from a socket; None at a clean EOF."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def message(self):
        if not self._fill(5):
            if self.buf:
                raise EOFError(f"EOF inside a message header: {self.buf!r}")
            return None
        mtype = chr(self.buf[0])
        (length,) = struct.unpack("!I", self.buf[1:5])
        if length < 4 or length > 1 << 26:
            raise ValueError(f"bad message length {length} for type {mtype!r}")
        if not self._fill(1 + length):
            raise EOFError(f"EOF inside a {mtype!r} message")
        body = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return mtype, body


def _errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def _addr(sa):
    return [sa[0], sa[1]]


def run(spec):
    """Performs @spec (see the module docstring) and returns the result dict."""
    host, port = spec["host"], int(spec["port"])
    family = spec.get("family") or ("inet6" if ":" in host else "inet")
    af = socket.AF_INET6 if family == "inet6" else socket.AF_INET
    result = {"pid": os.getpid(), "messages": [], "eof": False}
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                            int(spec.get("v6only", 0)))
        sock.settimeout(float(spec.get("timeout", 10)))
        try:
            sock.connect((host, port))
        except OSError as e:
            result["connect_error"] = _errname(e)
            result["connect_strerror"] = e.strerror
            return result
        result["sockname"] = _addr(sock.getsockname())
        result["peername"] = _addr(sock.getpeername())
        try:
            if "raw_hex" in spec:
                sock.sendall(bytes.fromhex(spec["raw_hex"]))
            if "startup" in spec:
                sock.sendall(startup_message(spec["startup"]))
        except OSError as e:
            result["send_error"] = _errname(e)
        if spec.get("close_after_send"):
            return result
        _converse(sock, list(spec.get("queries", [])), result)
        return result
    finally:
        sock.close()


def _converse(sock, queries, result):
    # Answer every ReadyForQuery with the next query, then Terminate, and
    # read until the other side closes.
    reader = Reader(sock)
    try:
        while True:
            msg = reader.message()
            if msg is None:
                result["eof"] = True
                return
            result["messages"].append(describe(*msg))
            if msg[0] == "Z":
                sock.sendall(query_message(queries.pop(0)) if queries else TERMINATE)
    except OSError as e:
        result["read_error"] = _errname(e)
    except (EOFError, ValueError) as e:
        result["read_error"] = str(e)


def rows(result):
    """The DataRow columns a run() result received."""
    return [m["columns"] for m in result["messages"] if m["type"] == "D"]


def errors(result):
    """The ErrorResponse fields a run() result received."""
    return [m["fields"] for m in result["messages"] if m["type"] == "E"]


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
