"""
A small PostgreSQL v3 wire client for tests: raw sockets, so a test can
see getpeername(), choose the socket family, send malformed packets and
read exactly what came back.

Imported by the tests, and also run inside the test cgroup as
`python3 -c SOURCE SPEC_JSON` (or `-` and the spec on stdin); it then
prints one JSON result. The spec:

  host, port            where to connect (the address the workload uses)
  family                "inet" or "inet6" (default: from the host)
  v6only                IPV6_V6ONLY for inet6 sockets (default: 0, dual stack)
  raw_hex               bytes to send first, as hex
  startup               {param: value} of a StartupMessage to send
  queries               simple queries to run once the server is ready
  close_after_send      close right after sending, reading nothing
  timeout               seconds for each socket operation (default 10)
  ssl_request           send an SSLRequest first ("gssenc": a GSSENCRequest),
                        read the one-byte answer into ssl_answer and, when
                        it is 'N', go on with the startup in plaintext
  tls                   after an 'S' answer, handshake (no certificate
                        check) and go on over TLS (tls_version, tls_error)
  password              answer cleartext, MD5 and SCRAM-SHA-256 requests
  raw_bodies            add every message's body as hex ("body")

Each item of queries is a simple query (a string), or {"raw_hex": HEX}:
bytes sent as they are (e.g. an extended-protocol exchange built with the
*_message helpers below, or a malformed message), optionally with
"close": true to close the socket right after them.

The result has pid, sockname, peername (right after connect),
peername_after (at the last ReadyForQuery, before Terminate),
connect_error (errno name),
messages ([{type, ...}]), eof (the peer closed) and read_error; with a
password also scram_server_verified (the server proved it knew the
password too), with ssl_request also ssl_answer.
Stdlib only: it runs under /usr/bin/python3 as any user.
"""

import base64
import errno
import hashlib
import hmac
import json
import os
import socket
import struct
import sys

PROTOCOL_V3 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
TERMINATE = b"X\x00\x00\x00\x04"

# Authentication request codes (the first int32 of an 'R' message).
AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5 = 0, 3, 5
AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 10, 11, 12


def startup_message(params):
    body = struct.pack("!I", PROTOCOL_V3)
    for key, value in params.items():
        body += key.encode() + b"\0" + str(value).encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    body = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", len(body) + 4) + body


def message(mtype, body=b""):
    """A frontend message: type byte, int32 length (itself included), body."""
    return mtype.encode() + struct.pack("!I", len(body) + 4) + body


def _cstr(text):
    return text.encode() + b"\0"


def request_message(code):
    """SSLRequest or GSSENCRequest: length 8, then the request code."""
    return struct.pack("!II", 8, code)


def parse_message(sql, name="", param_types=()):
    body = _cstr(name) + _cstr(sql) + struct.pack("!H", len(param_types))
    body += b"".join(struct.pack("!I", oid) for oid in param_types)
    return message("P", body)


def bind_message(params=(), statement="", portal=""):
    """Bind with text-format parameters (None is NULL) and text results."""
    body = _cstr(portal) + _cstr(statement) + struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for value in params:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            data = str(value).encode()
            body += struct.pack("!i", len(data)) + data
    return message("B", body + struct.pack("!H", 0))


def describe_message(kind, name=""):
    """Describe a prepared statement (kind "S") or a portal ("P")."""
    return message("D", kind.encode() + _cstr(name))


def execute_message(portal="", max_rows=0):
    return message("E", _cstr(portal) + struct.pack("!I", max_rows))


def close_message(kind, name=""):
    return message("C", kind.encode() + _cstr(name))


def function_call_message(function_oid, args=()):
    """FunctionCall (the fast path libpq's lo_* use) with text arguments and result."""
    body = struct.pack("!IH", function_oid, 0) + struct.pack("!H", len(args))
    for value in args:
        data = str(value).encode()
        body += struct.pack("!i", len(data)) + data
    return message("F", body + struct.pack("!H", 0))


def sync_message():
    return message("S")


def flush_message():
    return message("H")


def password_message(data):
    return message("p", data)


def md5_password(password, user, salt):
    """What libpq sends for AuthenticationMD5Password."""
    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


class Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802/7677), no channel binding."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = "n=,r=" + self.nonce
        self.auth_message = self.salted = None

    def initial_response(self):
        data = ("n,," + self.client_first_bare).encode()
        return _cstr("SCRAM-SHA-256") + struct.pack("!i", len(data)) + data

    def final_response(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ValueError("SCRAM: server nonce does not extend ours")
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password,
                                          base64.b64decode(attrs["s"]), int(attrs["i"]))
        without_proof = "c=biws,r=" + attrs["r"]
        self.auth_message = ",".join((self.client_first_bare, server_first,
                                      without_proof)).encode()
        client_key = hmac.digest(self.salted, b"Client Key", "sha256")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), self.auth_message,
                                "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def server_verified(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        server_key = hmac.digest(self.salted, b"Server Key", "sha256")
        expected = hmac.digest(server_key, self.auth_message, "sha256")
        return hmac.compare_digest(base64.b64decode(attrs.get("v", "")), expected)


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
            if spec.get("ssl_request"):
                sock = _negotiate_encryption(sock, spec, result)
                if sock is None:
                    return result
            if "startup" in spec:
                sock.sendall(startup_message(spec["startup"]))
        except OSError as e:
            result["send_error"] = _errname(e)
        if spec.get("close_after_send"):
            return result
        _converse(sock, list(spec.get("queries", [])), result, spec)
        return result
    finally:
        sock.close()


def _negotiate_encryption(sock, spec, result):
    """Sends the request and reads the one-byte answer.

    Returns the socket to go on with: the same one after 'N', a TLS one
    after 'S' when spec["tls"] is set (no certificate check: what is
    tested is the exchange); None when the run ends here.
    """
    code = GSSENC_REQUEST_CODE if spec["ssl_request"] == "gssenc" else SSL_REQUEST_CODE
    sock.sendall(request_message(code))
    try:
        answer = sock.recv(1)
    except OSError as e:
        result["read_error"] = _errname(e)
        return None
    if not answer:
        result["eof"] = True
        return None
    result["ssl_answer"] = answer.decode(errors="replace")
    if answer == b"N":
        return sock
    if answer == b"S" and spec.get("tls"):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            tls = ctx.wrap_socket(sock)
        except (OSError, ssl.SSLError) as e:
            result["tls_error"] = str(e)
            return None
        result["tls_version"] = tls.version()
        return tls
    if answer == b"E":
        # An ErrorResponse instead of an answer: read it and the close.
        reader = Reader(sock)
        reader.buf = answer
        _converse(sock, [], result, spec, reader)
    return None


def _authenticate(sock, body, spec, state):
    """Answers an authentication request with spec["password"], if any."""
    (code,) = struct.unpack("!I", body[:4])
    password = spec.get("password")
    if password is None or code == AUTH_OK:
        return
    if code == AUTH_CLEARTEXT:
        sock.sendall(password_message(_cstr(password)))
    elif code == AUTH_MD5:
        user = spec.get("startup", {}).get("user", "")
        sock.sendall(password_message(_cstr(md5_password(password, user, body[4:8]))))
    elif code == AUTH_SASL:
        mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
        state["mechanisms"] = mechanisms
        if "SCRAM-SHA-256" in mechanisms:
            state["scram"] = Scram(password)
            sock.sendall(password_message(state["scram"].initial_response()))
    elif code == AUTH_SASL_CONTINUE and "scram" in state:
        sock.sendall(password_message(state["scram"].final_response(body[4:].decode())))
    elif code == AUTH_SASL_FINAL and "scram" in state:
        state["server_verified"] = state["scram"].server_verified(body[4:].decode())


def _send_next(sock, queries):
    """Sends the next item of queries (or Terminate); False when we closed."""
    if not queries:
        sock.sendall(TERMINATE)
        return True
    item = queries.pop(0)
    if isinstance(item, str):
        sock.sendall(query_message(item))
        return True
    sock.sendall(bytes.fromhex(item["raw_hex"]))
    return not item.get("close")


def _converse(sock, queries, result, spec=None, reader=None):
    # Answer every ReadyForQuery with the next query, then Terminate, and
    # read until the other side closes.
    spec = spec or {}
    reader = reader or Reader(sock)
    auth = {}
    try:
        while True:
            msg = reader.message()
            if msg is None:
                result["eof"] = True
                return
            described = describe(*msg)
            if spec.get("raw_bodies"):
                described["body"] = msg[1].hex()
            result["messages"].append(described)
            if msg[0] == "R":
                _authenticate(sock, msg[1], spec, auth)
            if msg[0] == "Z" and not queries and "peername_after" not in result:
                # The session is open and answered: the agent has long
                # found its origin record, and has not closed it yet.
                result["peername_after"] = _addr(sock.getpeername())
            if msg[0] == "Z" and not _send_next(sock, queries):
                result["closed_by_client"] = True
                return
    except OSError as e:
        result["read_error"] = _errname(e)
    except (EOFError, ValueError) as e:
        result["read_error"] = str(e)
    finally:
        if "server_verified" in auth:
            result["scram_server_verified"] = auth["server_verified"]
        if "mechanisms" in auth:
            result["sasl_mechanisms"] = auth["mechanisms"]


def rows(result):
    """The DataRow columns a run() result received."""
    return [m["columns"] for m in result["messages"] if m["type"] == "D"]


def errors(result):
    """The ErrorResponse fields a run() result received."""
    return [m["fields"] for m in result["messages"] if m["type"] == "E"]


if __name__ == "__main__":
    # "-": the spec comes on stdin (one too big for an argument).
    spec_text = sys.stdin.read() if sys.argv[1] == "-" else sys.argv[1]
    print(json.dumps(run(json.loads(spec_text))))
