#!/usr/bin/env python3
"""Loopback HTTP/1.1 helpers for the load-test harness (stdlib only).

  idle_client.py probe PORT
      Two GET / requests on one keep-alive connection to 127.0.0.1:PORT; exits 0 when both
      answer 200 with the upstream's body "hello world\\n". Proves the proxy proxies, and keeps
      the connection alive, before it is measured.

  idle_client.py hold --port PORT --count N --ready-file F --release-file R [...]
      Opens N keep-alive connections to 127.0.0.1:PORT in batches; on each it sends one
      GET / and reads the whole response, then leaves the connection open and idle. Once all
      are open it writes one JSON line to F ("ready"), holds them until R exists (or
      --hold-max seconds pass), counts how many the server closed meanwhile, prints a final
      JSON line on stdout and closes them all. Every step is bounded in time.
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: loadtest\r\nUser-Agent: coregate-loadtest-idle\r\n\r\n"
BODY = b"hello world\n"


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


async def one_connection(port, timeout):
    async def go():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await writer.drain()
        status, body = await read_response(reader)
        if status != 200 or body != BODY:
            writer.close()
            raise ValueError(f"unexpected response {status} {body[:40]!r}")
        return reader, writer

    return await asyncio.wait_for(go(), timeout)


async def hold(args):
    deadline_open = time.monotonic() + args.open_timeout
    conns, failures, errors = [], 0, {}
    started = time.monotonic()
    while len(conns) < args.count and time.monotonic() < deadline_open:
        n = min(args.batch, args.count - len(conns))
        results = await asyncio.gather(
            *(one_connection(args.port, args.conn_timeout) for _ in range(n)),
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
    tmp = args.ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(ready) + "\n")
    os.replace(tmp, args.ready_file)

    hold_until = time.monotonic() + args.hold_max
    while time.monotonic() < hold_until and not os.path.exists(args.release_file):
        await asyncio.sleep(0.05)
    released = os.path.exists(args.release_file)
    closed_by_server = sum(1 for reader, _ in conns if reader.at_eof())
    for _, writer in conns:
        writer.close()
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


def probe(port, timeout=3.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
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
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("port", type=int)
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
    args = p.parse_args()
    if args.cmd == "probe":
        try:
            return probe(args.port)
        except (OSError, ValueError) as e:
            print(f"probe: {e}", file=sys.stderr)
            return 1
    limit = raise_nofile()
    if limit < args.count + 64:
        print(f"hold: open-file limit {limit} is too low for {args.count} connections", file=sys.stderr)
        return 2
    return asyncio.run(hold(args))


if __name__ == "__main__":
    sys.exit(main())
