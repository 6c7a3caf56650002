#!/usr/bin/env python3
"""Loopback HTTP/1.1 and HTTP/2 helpers for the load-test harness (stdlib only).

  idle_client.py probe PORT [--tls] [--http10] [--h2]
      Two GET / requests on one keep-alive connection to 127.0.0.1:PORT; exits 0 when both
      answer 200 with the upstream's body "hello world\\n". Proves the proxy proxies, and keeps
      the connection alive, before it is measured. --tls: over TLS (no certificate check).
      --http10: then also, on a new connection, the request `openssl s_time -www /` sends
      ("GET / HTTP/1.0", no Host), which must answer 200 with the body and close. --h2: over
      HTTP/2 (streams 1 and 3): with --tls, ALPN h2 (the server must select it); without, h2c
      with prior knowledge.

  idle_client.py hold --port PORT --count N --ready-file F --release-file R [--tls] [--h2] [...]
      Opens N keep-alive connections to 127.0.0.1:PORT in batches; on each it sends one
      GET / and reads the whole response, then leaves the connection open and idle. Once all
      are open it writes one JSON line to F ("ready"), holds them until R exists (or
      --hold-max seconds pass), counts how many the server closed meanwhile, prints a final
      JSON line on stdout and closes them all. Every step is bounded in time. --tls: each
      connection does a full TLS handshake first (no session resumption; OpenSSL's default
      versions and suites, or what OPENSSL_CONF says; no certificate check); the JSON lines
      count the version and suite negotiated. --h2: HTTP/2 on each connection (ALPN h2 with
      --tls, else h2c prior knowledge): the client preface, an empty SETTINGS, HEADERS for
      GET / built from HPACK static-table indices, the server's SETTINGS acknowledged, the
      response read; a GOAWAY received while idle counts as closed. The JSON lines count the
      application protocol of every connection ("protocols").

  idle_client.py tls-counters (--coregate-admin PORT | --haproxy-socket PATH)
      The proxy's own count of TLS handshakes so far, as one line "full=N resumed=N":
      Coregate's listener.<name>.ssl.handshake and .ssl.session_reused from GET /stats on its admin port, or
      HAProxy's frontend counters ssl_sess and ssl_reused_sess from `show stat typed` on its
      stats socket.
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: loadtest\r\nUser-Agent: coregate-loadtest-idle\r\n\r\n"
# What `openssl s_time -www /` sends on each of its connections.
REQUEST_S_TIME = b"GET / HTTP/1.0\r\n\r\n"
BODY = b"hello world\n"
TLS_READ = 16384


def tls_context(h2=False):
    """A client context with OpenSSL's defaults (TLS 1.2-1.3, its suites in its order; the
    harness pins a suite through OPENSSL_CONF) and no certificate check (self-signed). h2: it
    offers ALPN h2 (only)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if h2:
        ctx.set_alpn_protocols(["h2"])
    return ctx


def parse_response(buf):
    """One response with a Content-Length body at the start of buf: (status, body, used), or
    None while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("response without content-length")
    if len(buf) < end + 4 + length:
        return None
    return status, buf[end + 4:end + 4 + length], end + 4 + length


# ----------------------------------------------------------------------------- HTTP/2
# A minimal HTTP/2 client, enough for one GET / at a time per connection: the preface, an
# empty SETTINGS, HEADERS built by hand from HPACK static-table indices, and a reader that
# ACKs the server's SETTINGS and PINGs, and collects one response's :status and body.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_RST_STREAM, H2_SETTINGS, H2_PING, H2_GOAWAY, H2_CONTINUATION = 0, 1, 3, 4, 6, 7, 9
H2_END_STREAM, H2_ACK, H2_END_HEADERS, H2_PADDED, H2_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
H2_AUTHORITY = b"loadtest"
H2_USER_AGENT = b"coregate-loadtest-idle"
# HPACK static table (RFC 7541 appendix A): the :status entries.
HPACK_STATUS = {8: 200, 9: 204, 10: 206, 11: 304, 12: 400, 13: 404, 14: 500}
# HPACK Huffman codes of the digits (RFC 7541 appendix B): (bits, length) -> digit.
HUFFMAN_DIGITS = {(0x0, 5): "0", (0x1, 5): "1", (0x2, 5): "2", (0x19, 6): "3", (0x1a, 6): "4",
                  (0x1b, 6): "5", (0x1c, 6): "6", (0x1d, 6): "7", (0x1e, 6): "8", (0x1f, 6): "9"}


class H2Error(Exception):
    pass


def h2_frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def h2_request(stream, scheme):
    """HEADERS (END_STREAM | END_HEADERS) for GET / on STREAM: :method GET (static index 2),
    :scheme http/https (6/7), :path / (4), then :authority (name index 1) and user-agent (name
    index 58) as literals without indexing (the block needs no dynamic table on either side)."""
    block = bytes([0x82, 0x87 if scheme == "https" else 0x86, 0x84])
    block += bytes([0x01, len(H2_AUTHORITY)]) + H2_AUTHORITY
    block += bytes([0x0F, 58 - 15, len(H2_USER_AGENT)]) + H2_USER_AGENT
    return h2_frame(H2_HEADERS, H2_END_STREAM | H2_END_HEADERS, stream, block)


def hpack_int(buf, i, prefix):
    """An HPACK integer with a PREFIX-bit prefix at buf[i]: (value, index after it)."""
    mask = (1 << prefix) - 1
    v = buf[i] & mask
    i += 1
    if v < mask:
        return v, i
    shift = 0
    while True:
        b = buf[i]
        i += 1
        v += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def huffman_digits(data):
    """Decodes a Huffman-coded string of digits (what a :status literal holds); None if it holds
    anything else."""
    out, code, n = [], 0, 0
    for byte in data:
        for k in range(7, -1, -1):
            code, n = (code << 1) | ((byte >> k) & 1), n + 1
            d = HUFFMAN_DIGITS.get((code, n))
            if d:
                out.append(d)
                code, n = 0, 0
            elif n > 6 and code != (1 << n) - 1:
                return None
    if n >= 8 or code != (1 << n) - 1:  # padding: fewer than 8 bits, all ones
        return None
    return "".join(out)


def hpack_status(block):
    """The :status of a response header block (it comes first): static-table entries 8-14,
    indexed or as a literal's name with a raw or Huffman value. None when it cannot tell (a
    dynamic-table reference)."""
    i = 0
    while i < len(block) and block[i] & 0xE0 == 0x20:  # dynamic table size updates
        _, i = hpack_int(block, i, 5)
    if i >= len(block):
        return None
    b = block[i]
    if b & 0x80:
        idx, _ = hpack_int(block, i, 7)
        return HPACK_STATUS.get(idx)
    idx, i = hpack_int(block, i, 6 if b & 0x40 else 4)
    if idx not in HPACK_STATUS:
        return None
    huff = block[i] & 0x80
    n, i = hpack_int(block, i, 7)
    raw = block[i:i + n]
    value = huffman_digits(raw) if huff else raw.decode("ascii", "replace")
    return int(value) if value and value.isdigit() else None


class H2Client:
    """Sans-I/O: feed() what the server sent, take() what to send. One request at a time."""

    def __init__(self, scheme):
        self.scheme = scheme
        self.inbuf = b""
        self.out = bytearray(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0))
        self.next_stream = 1
        self.stream = None
        self.status = self.body = self.block = None
        self.done = False
        self.goaway = None
        self.settings_received = False

    def request(self):
        self.stream = self.next_stream
        self.next_stream += 2
        self.status, self.body, self.block, self.done = None, b"", b"", False
        self.out += h2_request(self.stream, self.scheme)

    def take(self):
        data, self.out = bytes(self.out), bytearray()
        return data

    def feed(self, data):
        self.inbuf += data
        while len(self.inbuf) >= 9:
            length = int.from_bytes(self.inbuf[:3], "big")
            if len(self.inbuf) < 9 + length:
                break
            ftype, flags = self.inbuf[3], self.inbuf[4]
            stream = int.from_bytes(self.inbuf[5:9], "big") & 0x7FFFFFFF
            payload = self.inbuf[9:9 + length]
            self.inbuf = self.inbuf[9 + length:]
            self._frame(ftype, flags, stream, payload)

    def _frame(self, ftype, flags, stream, payload):
        if ftype == H2_SETTINGS and not flags & H2_ACK:
            self.settings_received = True
            self.out += h2_frame(H2_SETTINGS, H2_ACK, 0)
        elif ftype == H2_PING and not flags & H2_ACK:
            self.out += h2_frame(H2_PING, H2_ACK, 0, payload)
        elif ftype == H2_GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.goaway = (last, code)
            if self.stream is not None and not self.done and self.stream > last:
                raise H2Error(f"GOAWAY (last stream {last}, error {code}) before the response")
        elif stream != self.stream or self.stream is None:
            return
        elif ftype == H2_RST_STREAM:
            raise H2Error(f"RST_STREAM (error {int.from_bytes(payload[:4], 'big')}) on stream {stream}")
        elif ftype in (H2_HEADERS, H2_CONTINUATION, H2_DATA):
            if flags & H2_PADDED and ftype != H2_CONTINUATION:
                payload = payload[1:len(payload) - payload[0]]
            if ftype == H2_HEADERS and flags & H2_PRIORITY:
                payload = payload[5:]
            if ftype == H2_DATA:
                self.body += payload
            else:
                self.block += payload
                if flags & H2_END_HEADERS and self.status is None:
                    self.status = hpack_status(self.block)
                    if self.status is None:
                        raise H2Error(f"cannot read :status from the header block {self.block[:16].hex()}")
            if flags & H2_END_STREAM and ftype != H2_CONTINUATION:
                self.done = True


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def read_response(reader):
    """Reads one response with a Content-Length body; returns (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("response without content-length")
    body = await reader.readexactly(length)
    return status, body


class PlainConnection:
    def __init__(self, reader, writer, h2=None):
        self.reader, self.writer, self.h2 = reader, writer, h2

    def alpn(self):
        return "h2c" if self.h2 else "http/1.1"

    def closed_by_server(self):
        return self.reader.at_eof()

    def close(self):
        self.writer.close()


class TlsConnection:
    """A TLS client connection: an ssl.SSLObject on memory BIOs over a non-blocking socket,
    driven through the event loop's sock_* calls. (asyncio's own SSL transport keeps a 256 KiB
    read buffer per connection: 2.5 GiB of client memory for 10,000 idle connections.)"""

    def __init__(self, ctx, h2=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_side=False)
        self.loop = asyncio.get_running_loop()
        self.h2 = h2  # an H2Client: HTTP/2 over this connection (ALPN h2 required)

    async def _flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def _fill(self):
        data = await self.loop.sock_recv(self.sock, TLS_READ)
        if not data:
            raise ConnectionError("closed by the server")
        self.incoming.write(data)

    async def open(self, port):
        await self.loop.sock_connect(self.sock, ("127.0.0.1", port))
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
        await self._flush()
        if self.h2 and self.tls.selected_alpn_protocol() != "h2":
            raise ValueError(f"ALPN: the server selected {self.tls.selected_alpn_protocol()!r}, not h2")

    def alpn(self):
        return self.tls.selected_alpn_protocol() or ("none" if self.h2 else "http/1.1")

    async def request_h2(self):
        """GET / over HTTP/2 (the preface and SETTINGS go with the first): (status, body)."""
        self.h2.request()
        while True:
            out = self.h2.take()
            if out:
                self.tls.write(out)
            await self._flush()
            if self.h2.done:
                return self.h2.status, self.h2.body
            try:
                data = self.tls.read(TLS_READ)
            except ssl.SSLWantReadError:
                await self._fill()
                continue
            if not data:
                raise ConnectionError("closed by the server")
            self.h2.feed(data)

    async def request(self, request):
        self.tls.write(request)
        await self._flush()
        buf = b""
        while True:
            try:
                buf += self.tls.read(TLS_READ)
            except ssl.SSLWantReadError:
                await self._flush()
                await self._fill()
                continue
            r = parse_response(buf)
            if r:
                return r[0], r[1]

    def negotiated(self):
        return f"{self.tls.version()} {self.tls.cipher()[0]}"

    def closed_by_server(self):
        """Takes what arrived while idle without blocking: the server closed if the socket
        reached EOF or an error, or TLS saw close_notify."""
        try:
            while True:
                data = self.sock.recv(TLS_READ)
                if not data:
                    return True
                self.incoming.write(data)
        except BlockingIOError:
            pass
        except OSError:
            return True
        try:
            while True:
                data = self.tls.read(TLS_READ)
                if not data:
                    break
                if self.h2:
                    self.h2.feed(data)  # a GOAWAY sent while idle counts as closed
                    if self.h2.goaway:
                        return True
        except ssl.SSLWantReadError:
            return False
        except H2Error:
            return True
        except (ssl.SSLZeroReturnError, ssl.SSLError):
            return True
        return True

    def close(self):
        self.sock.close()


async def one_connection(port, timeout, ctx=None, h2=False):
    async def plain():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if h2:
                client = H2Client("http")
                client.request()
                while not client.done:
                    writer.write(client.take())
                    await writer.drain()
                    data = await reader.read(TLS_READ)
                    if not data:
                        raise ConnectionError("closed by the server")
                    client.feed(data)
                writer.write(client.take())  # the ACKs of what came with the response
                await writer.drain()
                status, body = client.status, client.body
            else:
                client = None
                writer.write(REQUEST)
                await writer.drain()
                status, body = await read_response(reader)
            if status != 200 or body != BODY:
                raise ValueError(f"unexpected response {status} {body[:40]!r}")
        except BaseException:
            writer.close()
            raise
        return PlainConnection(reader, writer, client)

    async def tls(conn):
        await conn.open(port)
        status, body = await (conn.request_h2() if h2 else conn.request(REQUEST))
        if status != 200 or body != BODY:
            raise ValueError(f"unexpected response {status} {body[:40]!r}")
        return conn

    if ctx is None:
        return await asyncio.wait_for(plain(), timeout)
    conn = TlsConnection(ctx, H2Client("https") if h2 else None)
    try:
        return await asyncio.wait_for(tls(conn), timeout)
    except BaseException:
        conn.close()
        raise


async def hold(args):
    deadline_open = time.monotonic() + args.open_timeout
    conns, failures, errors = [], 0, {}
    ctx = tls_context(args.h2) if args.tls else None
    started = time.monotonic()
    while len(conns) < args.count and time.monotonic() < deadline_open:
        n = min(args.batch, args.count - len(conns))
        results = await asyncio.gather(
            *(one_connection(args.port, args.conn_timeout, ctx, args.h2) for _ in range(n)),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                failures += 1
                key = type(r).__name__ + (f": {r}" if str(r) else "")
                errors[key[:120]] = errors.get(key[:120], 0) + 1
            else:
                conns.append(r)
        if failures > args.max_failures:
            break
    open_seconds = time.monotonic() - started
    ready = {
        "ready": True,
        "requested": args.count,
        "opened": len(conns),
        "failed": failures,
        "errors": errors,
        "open_seconds": round(open_seconds, 3),
    }
    if args.tls:
        negotiated = {}
        for c in conns:
            key = c.negotiated()
            negotiated[key] = negotiated.get(key, 0) + 1
        ready["tls_negotiated"] = negotiated
    protocols = {}
    for c in conns:
        protocols[c.alpn()] = protocols.get(c.alpn(), 0) + 1
    ready["protocols"] = protocols
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(ready) + "\n")
    os.replace(tmp, args.ready_file)

    hold_until = time.monotonic() + args.hold_max
    while time.monotonic() < hold_until and not os.path.exists(args.release_file):
        await asyncio.sleep(0.05)
    released = os.path.exists(args.release_file)
    closed_by_server = sum(1 for c in conns if c.closed_by_server())
    for c in conns:
        c.close()
    await asyncio.sleep(0.2)
    result = dict(ready)
    result.update(
        {
            "released": released,
            "held_seconds": round(time.monotonic() - started - open_seconds, 3),
            "closed_by_server_while_idle": closed_by_server,
        }
    )
    print(json.dumps(result), flush=True)
    return 0 if conns else 1


def connect(port, timeout, ctx):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if ctx is None:
        return s
    try:
        return ctx.wrap_socket(s)
    except BaseException:
        s.close()
        raise


def probe(port, tls=False, http10=False, h2=False, timeout=3.0):
    if h2:
        return probe_h2(port, tls, timeout)
    ctx = tls_context() if tls else None
    with connect(port, timeout, ctx) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(REQUEST)
            line = f.readline()
            parts = line.split(b" ", 2)
            if len(parts) < 2 or parts[1] != b"200":
                print(f"probe: unexpected status line {line!r}", file=sys.stderr)
                return 1
            length = None
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = f.read(length) if length is not None else b""
            if body != BODY:
                print(f"probe: unexpected body {body!r}", file=sys.stderr)
                return 1
    if http10:
        return probe_http10(port, ctx, timeout)
    return 0


def probe_h2(port, tls, timeout):
    """Two GET / over HTTP/2 on one connection (streams 1 and 3): with --tls over ALPN h2 (the
    server must select it), else h2c with prior knowledge. Both must answer 200 with the body."""
    ctx = tls_context(h2=True) if tls else None
    client = H2Client("https" if tls else "http")
    with connect(port, timeout, ctx) as s:
        if tls and s.selected_alpn_protocol() != "h2":
            print(f"probe: ALPN: the server selected {s.selected_alpn_protocol()!r}, not h2", file=sys.stderr)
            return 1
        for _ in range(2):
            client.request()
            while True:
                out = client.take()
                if out:
                    s.sendall(out)
                if client.done:
                    break
                data = s.recv(TLS_READ)
                if not data:
                    print("probe: h2: the server closed the connection before the response", file=sys.stderr)
                    return 1
                client.feed(data)
            if client.status != 200 or client.body != BODY:
                print(f"probe: h2 stream {client.stream}: unexpected response {client.status} {client.body[:40]!r}",
                      file=sys.stderr)
                return 1
    return 0


def probe_http10(port, ctx, timeout):
    """The request of `openssl s_time -www /` on a connection of its own: 200, the body, and
    the server closes the connection (s_time reads until it does)."""
    with connect(port, timeout, ctx) as s:
        s.sendall(REQUEST_S_TIME)
        buf = b""
        while True:
            try:
                data = s.recv(TLS_READ)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                data = b""
            except socket.timeout:
                print(f"probe: HTTP/1.0 request: the connection was not closed within {timeout}s "
                      f"(read {buf[:60]!r})", file=sys.stderr)
                return 1
            if not data:
                break
            buf += data
    r = parse_response(buf)
    if not r or r[0] != 200 or r[1] != BODY:
        print(f"probe: HTTP/1.0 request: unexpected response {buf[:80]!r}", file=sys.stderr)
        return 1
    return 0


def http_get(port, path, timeout):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        buf = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b"?"
    if status != b"200":
        raise ValueError(f"GET {path}: status {status.decode(errors='replace')}")
    return body.decode(errors="replace")


def unix_command(path, command, timeout):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        buf = b""
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    return buf.decode(errors="replace")


def tls_counters(args, timeout=5.0):
    if args.coregate_admin:
        # Envoy-style names, summed over listeners: listener.<name>.ssl.handshake: N
        values = {"ssl.handshake": 0, "ssl.session_reused": 0}
        seen = set()
        for line in http_get(args.coregate_admin, "/stats?filter=%5Elistener%5C.", timeout).splitlines():
            name, _, value = line.partition(": ")
            for stat in values:
                if name.startswith("listener.") and name.endswith("." + stat) and ".worker_" not in name:
                    values[stat] += int(value)
                    seen.add(stat)
        if len(seen) != 2:
            raise ValueError("no listener.*.ssl.handshake / ssl.session_reused in Coregate's /stats")
        full = values["ssl.handshake"] - values["ssl.session_reused"]
        resumed = values["ssl.session_reused"]
    else:
        # Lines like "F.2.0.103.ssl_sess.1:MCP:u64:8": frontends only (F.), summed.
        values = {"ssl_sess": 0, "ssl_reused_sess": 0}
        seen = set()
        for line in unix_command(args.haproxy_socket, "show stat typed", timeout).splitlines():
            fields = line.split(":")
            key = fields[0].split(".")
            if len(fields) >= 4 and key[0] == "F" and len(key) >= 5 and key[4] in values:
                values[key[4]] += int(fields[-1])
                seen.add(key[4])
        if len(seen) != 2:
            raise ValueError("no ssl_sess / ssl_reused_sess frontend counters from HAProxy")
        full, resumed = values["ssl_sess"], values["ssl_reused_sess"]
    print(f"full={full} resumed={resumed}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("port", type=int)
    pr.add_argument("--tls", action="store_true", help="over TLS")
    pr.add_argument("--http10", action="store_true", help="also the request of openssl s_time -www /")
    pr.add_argument("--h2", action="store_true", help="over HTTP/2 (ALPN h2 with --tls, else h2c prior knowledge)")
    tc = sub.add_parser("tls-counters")
    src = tc.add_mutually_exclusive_group(required=True)
    src.add_argument("--coregate-admin", type=int, metavar="PORT")
    src.add_argument("--haproxy-socket", metavar="PATH")
    h = sub.add_parser("hold")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--count", type=int, default=10000)
    h.add_argument("--batch", type=int, default=250, help="connections opened concurrently")
    h.add_argument("--ready-file", required=True)
    h.add_argument("--release-file", required=True)
    h.add_argument("--hold-max", type=float, default=60.0, help="seconds to hold at most")
    h.add_argument("--open-timeout", type=float, default=60.0, help="seconds to open them all")
    h.add_argument("--conn-timeout", type=float, default=10.0, help="seconds per connection")
    h.add_argument("--max-failures", type=int, default=100)
    h.add_argument("--tls", action="store_true", help="TLS connections (a full handshake each)")
    h.add_argument("--h2", action="store_true",
                   help="HTTP/2: ALPN h2 with --tls (else h2c prior knowledge); preface, SETTINGS and one GET /")
    args = p.parse_args()
    if args.cmd == "probe":
        try:
            return probe(args.port, tls=args.tls, http10=args.http10, h2=args.h2)
        except (OSError, ValueError, IndexError, H2Error) as e:
            print(f"probe: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    if args.cmd == "tls-counters":
        try:
            return tls_counters(args)
        except (OSError, ValueError, IndexError) as e:
            print(f"tls-counters: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    limit = raise_nofile()
    if limit < args.count + 64:
        print(f"hold: open-file limit {limit} is too low for {args.count} connections", file=sys.stderr)
        return 2
    return asyncio.run(hold(args))


if __name__ == "__main__":
    sys.exit(main())
