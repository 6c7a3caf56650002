#!/usr/bin/env python3
"""Statistics, table, JSON and SVG chart for the Coregate load-test harness (stdlib only).

The harness (loadtest/run) calls it in these ways:

  report.py record-load --raw RAW.jsonl --wrk-output FILE ...   one wrk measurement -> RAW
  report.py record-h2load --raw RAW.jsonl --h2load-output FILE --request-log FILE ...
                                     one h2load (HTTP/2) measurement -> RAW (a "load" record)
  report.py record-handshake --raw RAW.jsonl --client-output FILE... one TLS handshake
                                     measurement (openssl s_time or wrk) -> RAW
  report.py record-idle --raw RAW.jsonl --client-output FILE ... one idle-memory run -> RAW
  report.py record-chaos --raw RAW.jsonl --wrk-output FILE --base-us US ... one chaos run
                                     (an endpoint killed and restarted under wrk) -> RAW
  report.py final --raw RAW.jsonl --out-dir DIR --stamp STAMP ...

`final` groups the raw runs by (layout, case, connections, proxy), takes the median and the
min-max spread of every figure over the runs, computes ratios against nginx run by run (both
figures of a ratio always come from the same run), prints the table, and writes
DIR/STAMP.json, DIR/STAMP.svg and the copies DIR/latest.json, DIR/latest.svg.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from xml.sax.saxutils import escape

PROXY_ORDER = ["coregate", "nginx", "haproxy", "direct"]
PROXY_COLORS = {
    "coregate": "#d95f02",
    "nginx": "#1b9e77",
    "haproxy": "#7570b3",
    "direct": "#8c8c8c",
}
LAYOUT_TEXT = {
    "cpu": "cpu layout: client (wrk, h2load) + upstream on CPU 0, proxy alone on CPU 1 "
    "(load-generator bound: rank by CPU us/request)",
    "rps": "rps layout: client (wrk, h2load) alone on CPU 0, proxy + upstream on CPU 1 "
    "(generator has headroom: requests/s compare)",
}
LAT_KEYS = ["p50", "p75", "p90", "p99", "p99.9"]


# ----------------------------------------------------------------------------- recording


def parse_wrk(text):
    """Figures from wrk's output: the LT_RESULT line of loadtest/wrk.lua's done() hook, checked
    against wrk's own summary lines."""
    out = {"parsed": False}
    m = re.search(r"^LT_RESULT (.*)$", text, re.M)
    if m:
        kv = dict(item.split("=", 1) for item in m.group(1).split())
        num = {k: float(v) for k, v in kv.items()}
        out.update(
            parsed=True,
            requests=int(num["requests"]),
            duration_s=num["duration_us"] / 1e6,
            bytes=int(num["bytes"]),
            errors={
                "connect": int(num["connect"]),
                "read": int(num["read"]),
                "write": int(num["write"]),
                "timeout": int(num["timeout"]),
                "status": int(num["status"]),
            },
            latency_us={
                "p50": num["p50"],
                "p75": num["p75"],
                "p90": num["p90"],
                "p99": num["p99"],
                "p99.9": num["p999"],
                "mean": num["mean"],
                "max": num["max"],
            },
        )
    # wrk's own lines (a cross-check, and the only source if the hook did not run).
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    sock = dict(zip(["connect", "read", "write", "timeout"], map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    rps_line = float(m.group(1)) if m else None
    errs = out.setdefault("errors", {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0})
    for k, v in sock.items():
        errs[k] = max(errs.get(k, 0), v)
    errs["status"] = max(errs.get("status", 0), non2xx)
    if out["parsed"] and out["duration_s"] > 0:
        out["rps"] = out["requests"] / out["duration_s"]
    else:
        out["rps"] = rps_line or 0.0
        out.setdefault("requests", 0)
    out["errors_total"] = sum(errs.values())
    return out


H2LOAD_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def h2load_duration_us(text):
    """"1.63ms" -> 1630.0 (h2load's util::format_duration: us, ms or s)."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    return float(m.group(1)) * H2LOAD_UNITS[m.group(2)] if m else None


def parse_h2load(text):
    """Figures from h2load's output (nghttp2 1.52): requests of the measured phase, req/s, status
    classes, its own request-time statistics (min/max/mean/sd: it prints no percentiles), the
    per-client req/s spread, and the TLS and application protocol it negotiated."""
    out = {"parsed": False, "requests": 0, "rps": 0.0}
    m = re.search(r"^finished in \S+, ([\d.]+) req/s", text, re.M)
    if m:
        out["rps_line"] = float(m.group(1))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", text, re.M)
    if m:
        total, started, done, ok, failed, errored, timeout = map(int, m.groups())
        out.update(parsed=True, requests=ok, total=total, started=started, done=done, failed=failed,
                   errored=errored, timeout=timeout)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m:
        out["status"] = dict(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m.groups())))
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        out["request_time_us"] = dict(zip(["min", "max", "mean", "sd"], map(h2load_duration_us, m.groups())))
    m = re.search(r"^req/s\s+:\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
    if m:
        out["client_rps"] = dict(zip(["min", "max", "mean", "sd"], map(float, m.groups())))
    for key, pat in [("tls_protocol", r"^TLS Protocol: (\S+)"), ("cipher", r"^Cipher: (\S+)"),
                     ("server_temp_key", r"^Server Temp Key: (\S+)"), ("protocol", r"^Application protocol: (\S+)")]:
        m = re.search(pat, text, re.M)
        if m:
            out[key] = m.group(1)
    return out


def percentile(sorted_vals, p):
    """Nearest rank."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return float(sorted_vals[k])


def parse_request_log(path):
    """h2load --log-file: one line per request of the measured phase, "start_us<TAB>status<TAB>
    microseconds" (status -1: the stream failed). Latency percentiles over the requests that
    completed."""
    lat, failed, lines, first, last = [], 0, 0, None, None
    try:
        with open(path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) < 3:
                    continue
                lines += 1
                start, us = int(parts[0]), int(parts[2])
                first = start if first is None else min(first, start)
                last = start + us if last is None else max(last, start + us)
                if parts[1] == "-1":
                    failed += 1
                    continue
                lat.append(us)
    except (OSError, ValueError):
        return None
    lat.sort()
    res = {"lines": lines, "failed": failed}
    if first is not None:
        # From the first request sent to the last response: about the measured duration, unless
        # requests stopped early.
        res["active_s"] = round((last - first) / 1e6, 3)
    if lat:
        res["latency_us"] = {k: percentile(lat, float(k[1:])) for k in LAT_KEYS}
        res["latency_us"]["mean"] = sum(lat) / len(lat)
        res["latency_us"]["max"] = float(lat[-1])
    return res


def parse_s_time(text):
    """Figures from one `openssl s_time -new` output: connections made, how many the client saw
    resumed ("r" marks) or new ("*", "t", "3" marks: one per connection), bytes read."""
    out = {"parsed": False, "connections": 0, "new": 0, "reused": 0, "bytes": 0, "error": None}
    m = re.search(r"^(\d+) connections in ([\d.]+)s; [\d.]+ connections/user sec, bytes read (\d+)", text, re.M)
    if m:
        out.update(parsed=True, connections=int(m.group(1)), client_user_s=float(m.group(2)), bytes=int(m.group(3)))
    marks = "".join(ln.strip() for ln in text.splitlines() if re.fullmatch(r"[*rt23]+", ln.strip()))
    out["reused"] = marks.count("r")
    out["new"] = len(marks) - out["reused"]
    if "ERROR" in text or not m:
        tail = [ln for ln in text.splitlines() if ln.strip() and not re.fullmatch(r"[*rt23]+", ln.strip())]
        out["error"] = " / ".join(tail[-3:])[:200] or "no output"
    return out


def suite_of(negotiated):
    """"TLSv1.3 TLS_AES_256_GCM_SHA384 X25519 ECDSA" -> "TLSv1.3 TLS_AES_256_GCM_SHA384"."""
    return " ".join((negotiated or "").split()[:2])


def tls_record(a):
    """The TLS part of a record (None for a plain-HTTP case), and whether the suite is wrong."""
    if a.negotiated is None:
        return None, False
    tls = {"negotiated": a.negotiated or None, "expected": a.expected_suite or None}
    wrong = not a.negotiated or bool(a.expected_suite and suite_of(a.negotiated) != a.expected_suite)
    return tls, wrong


STAT_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]


def sys_delta(before, after, clk_tck, wall):
    """Per-CPU /proc/stat deltas over the measurement: busy and steal, in % of one CPU."""
    def parse(snap):
        out = {}
        for line in (snap or "").split(";"):
            f = line.split()
            if f and f[0].startswith("cpu"):
                out[f[0]] = [int(x) for x in f[1:1 + len(STAT_FIELDS)]]
        return out

    b, a = parse(before), parse(after)
    res = {}
    for cpu in a:
        if cpu not in b:
            continue
        d = dict(zip(STAT_FIELDS, (y - x for x, y in zip(b[cpu], a[cpu]))))
        total = sum(d.values()) or 1
        res[cpu] = {
            "ticks": d,
            "busy_pct": round(100.0 * (total - d["idle"] - d["iowait"]) / total, 1),
            "steal_pct": round(100.0 * d["steal"] / total, 1),
        }
    return res


def log_lines(path, limit=20):
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        # HAProxy's start-up banner ([NOTICE] version/path lines) is not worth keeping.
        lines = [ln.rstrip("\n") for ln in f if ln.strip() and "[NOTICE]" not in ln]
    return lines[-limit:]


def human_rate(x):
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def cmd_record_load(a):
    with open(a.wrk_output, errors="replace") as f:
        text = f.read()
    w = parse_wrk(text)
    cpu_s = a.proxy_ticks / a.clk_tck if a.proxy_ticks is not None else None
    up_s = a.upstream_ticks / a.clk_tck if a.upstream_ticks is not None else None
    req = w.get("requests", 0)
    rec = {
        "kind": "load",
        "layout": a.layout,
        "run": a.run,
        "case": a.case,
        "connections": a.connections,
        "proxy": a.proxy,
        "duration_requested_s": a.duration,
        "wall_s": a.wall,
        "requests": req,
        "rps": w["rps"],
        "latency_us": w.get("latency_us"),
        "errors": w["errors"],
        "errors_total": w["errors_total"],
        "wrk_result_parsed": w["parsed"],
        "wrk_exit_code": a.wrk_rc,
        "proxy_cpu_s": cpu_s,
        "proxy_cpu_us_per_req": (cpu_s * 1e6 / req) if (cpu_s is not None and req) else None,
        "upstream_cpu_s": up_s,
        "upstream_cpu_us_per_req": (up_s * 1e6 / req) if (up_s is not None and req) else None,
        "system_cpu": sys_delta(a.sys_before, a.sys_after, a.clk_tck, a.wall),
        "loadavg_after": open("/proc/loadavg").read().strip(),
        "proxy_log": log_lines(a.log),
        "wrk_output": text,
    }
    if a.failure:
        rec["failure"] = a.failure
    if a.failure or not w["parsed"] or a.wrk_rc != 0:
        rec["errors"]["harness"] = 1
        rec["errors_total"] += 1
    tls, wrong_suite = tls_record(a)
    if tls is not None:
        rec["tls"] = tls
        if wrong_suite and not a.failure:
            rec["errors"]["cipher"] = 1
            rec["errors_total"] += 1
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec) + "\n")
    lat = rec["latency_us"] or {}
    cpu = rec["proxy_cpu_us_per_req"]
    flag = "" if rec["errors_total"] == 0 else f"  ERRORS {rec['errors']} {a.failure or ''}"
    steal = (rec["system_cpu"].get("cpu") or {}).get("steal_pct", 0)
    if steal >= 2:
        flag += f"  (hypervisor steal {steal}%)"
    if tls and wrong_suite:
        flag += f"  (negotiated {tls['negotiated']}, expected {tls['expected']})"
    print(
        f"  [{a.layout} run {a.run}] {a.case:<9} c={a.connections:<4} {a.proxy:<8} "
        f"{human_rate(rec['rps']):>7} req/s  p99 {fmt_lat(lat.get('p99')):>7}  "
        f"cpu {'-' if cpu is None else f'{cpu:.2f}':>6} us/req  "
        f"busy {'/'.join(str(round(v['busy_pct'])) + '%' for k, v in sorted(rec['system_cpu'].items()) if k != 'cpu')}"
        f"{flag}",
        flush=True,
    )


def cmd_record_h2load(a):
    """One h2load measurement, recorded as a "load" record (so that it is summarised, tabled and
    charted like the wrk cases) with the HTTP/2 specifics beside: streams, protocol, h2load's
    own request-time statistics."""
    try:
        with open(a.h2load_output, errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    h = parse_h2load(text)
    reqlog = parse_request_log(a.request_log) if a.request_log else None
    cpu_s = a.proxy_ticks / a.clk_tck if a.proxy_ticks is not None else None
    up_s = a.upstream_ticks / a.clk_tck if a.upstream_ticks is not None else None
    req = h["requests"]
    rps = h.get("rps_line") or (req / a.duration if a.duration else 0.0)
    status = h.get("status") or {}
    non2xx = sum(v for k, v in status.items() if k != "2xx")
    errors = {
        "status": non2xx,
        "stream": h.get("errored", 0),
        "timeout": h.get("timeout", 0),
        # failed counts non-2xx and errored too: what is left are requests never issued.
        "failed": max(0, h.get("failed", 0) - h.get("errored", 0) - non2xx),
    }
    problems = []
    if h["parsed"] and a.expect_protocol and h.get("protocol") != a.expect_protocol:
        errors["protocol"] = 1
        problems.append(f"h2load negotiated {h.get('protocol')!r}, expected {a.expect_protocol}")
    crps = h.get("client_rps")
    if h["parsed"] and a.connections > 1 and crps and crps["mean"] and crps["min"] < 0.5 * crps["mean"]:
        # h2load does not reconnect a connection the server closed (GOAWAY) in a timed run: it
        # would just stop adding load. A connection far below the others shows it.
        errors["client"] = errors.get("client", 0) + 1
        problems.append(f"a connection made {crps['min']:.0f} req/s, the mean {crps['mean']:.0f}: "
                        "closed or stalled during the run?")
    active = (reqlog or {}).get("active_s")
    if active is not None and a.duration and active < 0.9 * a.duration:
        # Every connection closed early (a per-connection request limit: GOAWAY), or all stalled.
        errors["client"] = errors.get("client", 0) + 1
        problems.append(f"requests went on for {active:.2f} s of the {a.duration:.0f} s measured: "
                        "connections closed (GOAWAY) or stalled?")
    if reqlog is not None and h["parsed"] and abs(reqlog["lines"] - h.get("done", 0)) > max(10, h.get("done", 0) // 1000):
        problems.append(f"request log has {reqlog['lines']} lines, h2load counted {h.get('done')} requests done")
    rec = {
        "kind": "load",
        "tool": "h2load",
        "layout": a.layout,
        "run": a.run,
        "case": a.case,
        "connections": a.connections,
        "streams": a.streams,
        "proxy": a.proxy,
        "duration_requested_s": a.duration,
        "warmup_s": a.warmup,
        "wall_s": a.wall,
        "requests": req,
        "rps": rps,
        "latency_us": (reqlog or {}).get("latency_us"),
        "latency_source": "h2load --log-file (every request of the measured phase)" if reqlog else None,
        "h2load_request_time_us": h.get("request_time_us"),
        "h2load_client_rps": crps,
        "h2load_requests": {k: h.get(k) for k in ("total", "started", "done", "failed", "errored", "timeout")},
        "h2load_status": status,
        "request_log": {k: v for k, v in (reqlog or {}).items() if k != "latency_us"} or None,
        "protocol": h.get("protocol"),
        "errors": errors,
        "errors_total": sum(errors.values()),
        "wrk_result_parsed": h["parsed"],
        "wrk_exit_code": a.h2load_rc,
        "proxy_cpu_s": cpu_s,
        "proxy_cpu_us_per_req": (cpu_s * 1e6 / req) if (cpu_s is not None and req) else None,
        "upstream_cpu_s": up_s,
        "upstream_cpu_us_per_req": (up_s * 1e6 / req) if (up_s is not None and req) else None,
        "system_cpu": sys_delta(a.sys_before, a.sys_after, a.clk_tck, a.wall),
        "loadavg_after": open("/proc/loadavg").read().strip(),
        "proxy_log": log_lines(a.log),
        "client_output": text[-3000:],
    }
    if problems:
        rec["problems"] = problems
    if a.failure:
        rec["failure"] = a.failure
    if a.failure or not h["parsed"] or a.h2load_rc != 0 or (a.request_log and not reqlog):
        rec["errors"]["harness"] = 1
        rec["errors_total"] += 1
    tls, wrong_suite = tls_record(a)
    if tls is not None:
        if h.get("tls_protocol"):
            # What h2load itself negotiated (it sets its own suite list; the harness pins it).
            tls["h2load"] = f"{h['tls_protocol']} {h.get('cipher', '?')} {h.get('server_temp_key', '?')}"
            if a.expected_suite and suite_of(tls["h2load"]) != a.expected_suite:
                wrong_suite = True
        rec["tls"] = tls
        if wrong_suite and not a.failure:
            rec["errors"]["cipher"] = 1
            rec["errors_total"] += 1
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec) + "\n")
    lat = rec["latency_us"] or {}
    cpu = rec["proxy_cpu_us_per_req"]
    flag = "" if rec["errors_total"] == 0 else f"  ERRORS {rec['errors']} {a.failure or ''}"
    if problems:
        flag += "  (" + "; ".join(problems) + ")"
    steal = (rec["system_cpu"].get("cpu") or {}).get("steal_pct", 0)
    if steal >= 2:
        flag += f"  (hypervisor steal {steal}%)"
    if tls and wrong_suite:
        flag += f"  (negotiated {tls['negotiated']} / h2load {tls.get('h2load')}, expected {tls['expected']})"
    print(
        f"  [{a.layout} run {a.run}] {a.case:<9} c={a.connections}x{a.streams:<3} {a.proxy:<8} "
        f"{human_rate(rec['rps']):>7} req/s  p99 {fmt_lat(lat.get('p99')):>7}  "
        f"cpu {'-' if cpu is None else f'{cpu:.2f}':>6} us/req  {rec['protocol'] or '-'}  "
        f"busy {'/'.join(str(round(v['busy_pct'])) + '%' for k, v in sorted(rec['system_cpu'].items()) if k != 'cpu')}"
        f"{flag}",
        flush=True,
    )


def cmd_record_idle(a):
    client = {}
    if a.client_output and os.path.exists(a.client_output):
        with open(a.client_output) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    client = json.loads(line)
    opened = client.get("opened", 0)
    delta_kb = a.rss_held - a.rss_before
    rec = {
        "kind": "idle",
        "layout": a.layout,
        "run": a.run,
        "case": a.case,
        "connections": a.requested,
        "proxy": a.proxy,
        "opened": opened,
        "failed": client.get("failed", None),
        "client_errors": client.get("errors", {}),
        "closed_by_server_while_idle": client.get("closed_by_server_while_idle"),
        "open_seconds": client.get("open_seconds"),
        "rss_before_kb": a.rss_before,
        "rss_held_kb": a.rss_held,
        "rss_after_close_kb": a.rss_after,
        "bytes_per_conn": (delta_kb * 1024 / opened) if opened else None,
        "proxy_log": log_lines(a.log),
    }
    problems = 0
    if not client:
        problems += 1
    problems += client.get("failed") or 0
    problems += client.get("closed_by_server_while_idle") or 0
    problems += max(0, a.requested - opened)
    tls, wrong_suite = tls_record(a)
    if tls is not None:
        # What s_client negotiated before, and what the idle client itself negotiated.
        tls["client"] = client.get("tls_negotiated", {})
        rec["tls"] = tls
        if wrong_suite or (a.expected_suite and any(k != a.expected_suite for k in tls["client"])):
            rec["wrong_suite"] = True
            problems += 1
    # The application protocol of every connection (ALPN, or h2c / http/1.1 on plain ones).
    rec["protocols"] = client.get("protocols")
    if a.expect_protocol:
        rec["protocol_expected"] = a.expect_protocol
        wrong = sum(n for k, n in (rec["protocols"] or {}).items() if k != a.expect_protocol)
        if wrong or rec["protocols"] is None:
            rec["wrong_protocol"] = wrong or 1
            problems += wrong or 1
    rec["errors_total"] = problems
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec) + "\n")
    bpc = rec["bytes_per_conn"]
    flag = "" if problems == 0 else f"  PROBLEMS: failed={rec['failed']} closed={rec['closed_by_server_while_idle']}"
    if rec.get("wrong_suite"):
        flag += f"  (negotiated {tls['negotiated']} / {tls['client']}, expected {tls['expected']})"
    if rec.get("wrong_protocol"):
        flag += f"  (protocols {rec['protocols']}, expected {a.expect_protocol})"
    print(
        f"  [{a.layout} run {a.run}] {a.case} {a.proxy:<8} held {opened}/{a.requested}  "
        f"RSS {a.rss_before / 1024:.1f} -> {a.rss_held / 1024:.1f} MiB  "
        f"{'-' if bpc is None else f'{bpc:,.0f}'} bytes/conn"
        f"{'  ' + ','.join(rec['protocols']) if a.expect_protocol and rec['protocols'] else ''}{flag}",
        flush=True,
    )


def parse_counts(text):
    """"FULL RESUMED" from the harness's tls_counts: ints, None for "-" (not counted), "?" for
    a count that could not be read."""
    parts = (text or "? ?").split()
    out = []
    for p in (parts + ["?", "?"])[:2]:
        out.append(int(p) if p.isdigit() else (None if p == "-" else "?"))
    return out


def cmd_record_handshake(a):
    outputs = []
    for path in a.client_output or []:
        try:
            with open(path, errors="replace") as f:
                outputs.append(f.read())
        except OSError:
            outputs.append("")
    rec = {
        "kind": "handshake",
        "layout": a.layout,
        "run": a.run,
        "case": a.case,
        "connections": a.clients,
        "proxy": a.proxy,
        "mode": a.mode,
        "tool": a.tool,
        "duration_requested_s": a.duration,
        "wall_s": a.wall,
    }
    errors = {"client": 0, "verify": 0, "cipher": 0, "harness": 0}
    problems = []
    client_new = client_reused = None
    measured = bool(outputs)  # False: the proxy did not start, nothing ran
    if not measured:
        handshakes = 0
        rec["client"] = {}
    elif a.tool == "s_time":
        parsed = [parse_s_time(t) for t in outputs]
        handshakes = sum(p["connections"] for p in parsed)
        client_new = sum(p["new"] for p in parsed)
        client_reused = sum(p["reused"] for p in parsed)
        bytes_read = sum(p["bytes"] for p in parsed)
        failed = [p["error"] for p in parsed if p["error"]]
        if failed:
            errors["client"] += len(failed)
            problems.append(f"{len(failed)} s_time client(s) failed: {failed[0]}")
        rec["client"] = {"processes": len(parsed), "new": client_new, "reused": client_reused,
                         "bytes_per_conn": (bytes_read / handshakes) if handshakes else None,
                         "client_user_s": round(sum(p.get("client_user_s", 0) for p in parsed), 3)}
        if handshakes and bytes_read / handshakes < 12:
            errors["client"] += 1
            problems.append(f"s_time read {bytes_read / handshakes:.0f} bytes per connection: no responses")
        rec["client_outputs"] = [t[-400:] for t in outputs]
    else:
        w = parse_wrk(outputs[0] if outputs else "")
        handshakes = w.get("requests", 0)
        rec["latency_us"] = w.get("latency_us")
        rec["client"] = {"wrk_errors": w["errors"]}
        errors["client"] += w["errors_total"]
        if not w["parsed"]:
            errors["harness"] += 1
            problems.append("no wrk result")
        rec["client_outputs"] = outputs
    rec["handshakes"] = handshakes
    rec["rate"] = handshakes / a.wall if a.wall and handshakes else 0.0
    if a.client_rc and measured:
        errors["harness"] += 1
        problems.append(f"client exit code {a.client_rc}")
    cpu_s = a.proxy_ticks / a.clk_tck if a.proxy_ticks is not None else None
    up_s = a.upstream_ticks / a.clk_tck if a.upstream_ticks is not None else None
    rec["proxy_cpu_s"] = cpu_s
    rec["proxy_cpu_us_per_handshake"] = (cpu_s * 1e6 / handshakes) if (cpu_s is not None and handshakes) else None
    rec["upstream_cpu_s"] = up_s
    # The proxy's own counts over the measured run.
    b, e = parse_counts(a.server_before), parse_counts(a.server_after)
    server = {}
    for i, k in enumerate(["full", "resumed"]):
        if b[i] is None or e[i] is None:
            server[k] = None
        elif b[i] == "?" or e[i] == "?":
            server[k] = "?"
        else:
            server[k] = e[i] - b[i]
    rec["server"] = server
    # Verification: the handshakes were of the kind the case claims.
    if not measured:
        pass
    elif a.mode == "full":
        if client_reused:
            errors["verify"] += 1
            problems.append(f"s_time saw {client_reused} resumed connections")
        if isinstance(server["resumed"], int) and server["resumed"] > 0:
            errors["verify"] += 1
            problems.append(f"the proxy counted {server['resumed']} resumed handshakes")
    else:
        # One full handshake per wrk connection at its start (+2 in flight when the warm-up
        # stopped), every other one resumed.
        allowed = a.clients + 2
        if not isinstance(server["full"], int):
            errors["verify"] += 1
            problems.append("resumption not verified: the proxy's full-handshake count is unavailable")
        elif server["full"] > allowed:
            errors["verify"] += 1
            problems.append(f"the proxy did {server['full']} full handshakes (at most {allowed} expected): "
                            "sessions were not resumed")
    tls, wrong_suite = tls_record(a)
    rec["tls"] = tls
    if wrong_suite and not a.failure:
        errors["cipher"] += 1
        problems.append(f"negotiated {tls['negotiated'] if tls else None}, expected {tls['expected'] if tls else None}")
    if a.failure:
        errors["harness"] += 1
        problems.insert(0, a.failure)
        rec["failure"] = a.failure
    rec["errors"] = errors
    rec["errors_total"] = sum(errors.values())
    rec["problems"] = problems
    rec["system_cpu"] = sys_delta(a.sys_before, a.sys_after, a.clk_tck, a.wall)
    rec["loadavg_after"] = open("/proc/loadavg").read().strip()
    rec["proxy_log"] = log_lines(a.log)
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec) + "\n")
    cpu = rec["proxy_cpu_us_per_handshake"]

    def cnt(v):
        return "-" if v is None else str(v)

    seen = (f"client new/resumed {cnt(client_new)}/{cnt(client_reused)}, " if a.tool == "s_time" else "")
    seen += f"proxy full/resumed {cnt(server['full'])}/{cnt(server['resumed'])}"
    flag = "" if rec["errors_total"] == 0 else "  ERRORS: " + "; ".join(problems)
    steal = (rec["system_cpu"].get("cpu") or {}).get("steal_pct", 0)
    if steal >= 2:
        flag += f"  (hypervisor steal {steal}%)"
    print(
        f"  [{a.layout} run {a.run}] {a.case} {a.proxy:<8} {human_rate(rec['rate']):>6} handshakes/s  "
        f"cpu {'-' if cpu is None else f'{cpu:.1f}':>6} us/handshake  {seen}  "
        f"busy {'/'.join(str(round(v['busy_pct'])) + '%' for k, v in sorted(rec['system_cpu'].items()) if k != 'cpu')}"
        f"{flag}",
        flush=True,
    )


# ----------------------------------------------------------------------------- summarising


def spread(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def proxy_rank(p):
    return PROXY_ORDER.index(p) if p in PROXY_ORDER else len(PROXY_ORDER)


def summarise(records):
    groups = {}
    for r in records:
        key = (r["layout"], r["case"], r["connections"])
        groups.setdefault(key, {}).setdefault(r["proxy"], []).append(r)
    out = []
    for (layout, case, conns), by_proxy in groups.items():
        nginx_by_run = {r["run"]: r for r in by_proxy.get("nginx", [])}
        for proxy in sorted(by_proxy, key=proxy_rank):
            runs = sorted(by_proxy[proxy], key=lambda r: r["run"])
            s = {"layout": layout, "case": case, "connections": conns, "proxy": proxy, "runs": len(runs),
                 "kind": runs[0]["kind"]}
            s["errors_total"] = sum(r["errors_total"] for r in runs)
            negotiated = sorted({(r.get("tls") or {}).get("negotiated") or "none" for r in runs if "tls" in r})
            if negotiated:
                s["negotiated"] = negotiated
            if runs[0]["kind"] == "handshake":
                s["mode"] = runs[0]["mode"]
                s["tool"] = runs[0]["tool"]
                s["handshakes_per_s"] = spread([r["rate"] for r in runs])
                s["proxy_cpu_us_per_handshake"] = spread([r["proxy_cpu_us_per_handshake"] for r in runs])
                cpu_ratio, rate_ratio = [], []
                for r in runs:
                    n = nginx_by_run.get(r["run"])
                    if n and r["proxy_cpu_us_per_handshake"] and n["proxy_cpu_us_per_handshake"]:
                        cpu_ratio.append(r["proxy_cpu_us_per_handshake"] / n["proxy_cpu_us_per_handshake"])
                    if n and n["rate"]:
                        rate_ratio.append(r["rate"] / n["rate"])
                s["cpu_ratio_vs_nginx"] = spread(cpu_ratio)
                s["rate_ratio_vs_nginx"] = spread(rate_ratio)
                s["handshakes"] = sum(r["handshakes"] for r in runs)

                def total(values):
                    if any(v is None for v in values):
                        return None
                    if any(v == "?" for v in values):
                        return "?"
                    return sum(values)

                s["client_new"] = total([(r.get("client") or {}).get("new") for r in runs])
                s["client_reused"] = total([(r.get("client") or {}).get("reused") for r in runs])
                s["server_full"] = total([r["server"]["full"] for r in runs])
                s["server_resumed"] = total([r["server"]["resumed"] for r in runs])
                errs = {}
                for r in runs:
                    for k, v in r["errors"].items():
                        errs[k] = errs.get(k, 0) + v
                s["errors"] = errs
                s["problems"] = [p for r in runs for p in r.get("problems", [])]
            elif runs[0]["kind"] == "chaos":
                for k in ("failed", "failed_non2xx", "failed_socket", "eject_s", "last_failure_s", "return_s",
                          "first_served_s", "p99_event_us", "p99_before_us", "rps", "failed_after_restart",
                          "victim_share_before"):
                    s[k] = spread([r.get(k) for r in runs])
                s["target"] = runs[0].get("target")
                s["target_met_runs"] = sum(1 for r in runs if r.get("target_met"))
                s["never_ejected_runs"] = sum(1 for r in runs if r.get("eject_s") is None)
                s["never_returned_runs"] = sum(1 for r in runs if r.get("return_s") is None)
                s["timelines"] = [r.get("timeline") for r in runs]
                s["errors"] = {"harness": sum(r["errors"].get("harness", 0) for r in runs)}
                s["problems"] = [p for r in runs for p in r.get("problems", [])]
            elif runs[0]["kind"] == "load":
                if runs[0].get("tool") == "h2load":
                    s["tool"] = "h2load"
                    s["streams"] = runs[0].get("streams")
                    s["protocols"] = sorted({r.get("protocol") or "none" for r in runs})
                    s["h2load_request_time_us"] = {
                        k: spread([(r.get("h2load_request_time_us") or {}).get(k) for r in runs])
                        for k in ("min", "max", "mean", "sd")
                    }
                    s["problems"] = [p for r in runs for p in r.get("problems", [])]
                s["rps"] = spread([r["rps"] for r in runs])
                s["proxy_cpu_us_per_req"] = spread([r["proxy_cpu_us_per_req"] for r in runs])
                s["upstream_cpu_us_per_req"] = spread([r["upstream_cpu_us_per_req"] for r in runs])
                s["latency_us"] = {
                    k: spread([(r["latency_us"] or {}).get(k) for r in runs]) for k in LAT_KEYS + ["mean", "max"]
                }
                cpu_ratio, rps_ratio = [], []
                for r in runs:
                    n = nginx_by_run.get(r["run"])
                    if n and r["proxy_cpu_us_per_req"] and n["proxy_cpu_us_per_req"]:
                        cpu_ratio.append(r["proxy_cpu_us_per_req"] / n["proxy_cpu_us_per_req"])
                    if n and n["rps"]:
                        rps_ratio.append(r["rps"] / n["rps"])
                s["cpu_ratio_vs_nginx"] = spread(cpu_ratio)
                s["rps_ratio_vs_nginx"] = spread(rps_ratio)
                errs = {}
                for r in runs:
                    for k, v in r["errors"].items():
                        errs[k] = errs.get(k, 0) + v
                s["errors"] = errs
            else:
                s["opened"] = spread([r["opened"] for r in runs])
                s["bytes_per_conn"] = spread([r["bytes_per_conn"] for r in runs])
                s["rss_before_kb"] = spread([r["rss_before_kb"] for r in runs])
                s["rss_held_kb"] = spread([r["rss_held_kb"] for r in runs])
                s["rss_after_close_kb"] = spread([r["rss_after_close_kb"] for r in runs])
                ratio = []
                for r in runs:
                    n = nginx_by_run.get(r["run"])
                    if n and r["bytes_per_conn"] and n["bytes_per_conn"]:
                        ratio.append(r["bytes_per_conn"] / n["bytes_per_conn"])
                s["bytes_ratio_vs_nginx"] = spread(ratio)
                s["closed_by_server_while_idle"] = sum(r["closed_by_server_while_idle"] or 0 for r in runs)
                if any("protocol_expected" in r for r in runs):
                    protos = {}
                    for r in runs:
                        for k, v in (r.get("protocols") or {}).items():
                            protos[k] = protos.get(k, 0) + v
                    s["protocols"] = protos
                    s["wrong_protocol"] = sum(r.get("wrong_protocol", 0) for r in runs)
                s["failed"] = sum(r["failed"] or 0 for r in runs)
                s["client_errors"] = {}
                for r in runs:
                    for k, v in (r.get("client_errors") or {}).items():
                        s["client_errors"][k] = s["client_errors"].get(k, 0) + v
            out.append(s)
    return out


# ----------------------------------------------------------------------------- table


def fmt_lat(us):
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.2f}ms"
    return f"{us / 1e6:.2f}s"


def fmt_num(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def fmt_spread(s, digits=0, scale=1.0):
    if s is None:
        return "-"
    med = fmt_num(s["median"] * scale, digits)
    if s["n"] < 2:
        return med
    return f"{med} ({fmt_num(s['min'] * scale, digits)}-{fmt_num(s['max'] * scale, digits)})"


class Painter:
    def __init__(self, color):
        self.color = color

    def bad(self, text):
        return f"\033[1;31m{text}\033[0m" if self.color else text

    def bold(self, text):
        return f"\033[1m{text}\033[0m" if self.color else text


def render_table(summary, meta, paint):
    lines = []
    opts = meta.get("options", {})
    case_order = {c: i for i, c in enumerate(opts.get("cases", []))}
    layout_order = {c: i for i, c in enumerate(opts.get("layouts", []))}

    def key(s):
        return (layout_order.get(s["layout"], 9), case_order.get(s["case"], 9), s["connections"], proxy_rank(s["proxy"]))

    summary = sorted(summary, key=key)
    blocks = {}
    for s in summary:
        blocks.setdefault((s["layout"], s["case"], s["connections"]), []).append(s)
    hdr_load = ["proxy", "req/s median (min-max)", "p50", "p99", "p99.9", "CPU us/req median (min-max)", "CPU vs nginx", "errors"]
    hdr_idle = ["proxy", "bytes/conn median (min-max)", "vs nginx", "held", "RSS before", "RSS held", "RSS after close", "problems"]
    hdr_hs = ["proxy", "handshakes/s median (min-max)", "CPU us/handshake median (min-max)", "CPU vs nginx",
              "client new/resumed", "proxy full/resumed", "errors"]
    current_layout = None

    def negotiated(s):
        v = s.get("negotiated") or []
        text = " | ".join(v) if v else "-"
        return paint.bad(f"!! {text}") if s.get("errors", {}).get("cipher") or len(v) > 1 else text

    def count(v):
        if v is None:
            return "-"
        return v if isinstance(v, str) else f"{v:,}"

    for (layout, case, conns), rows in blocks.items():
        n_runs = max(r["runs"] for r in rows)
        kind = rows[0]["kind"]
        tls = any("negotiated" in s for s in rows)
        lines.append("")
        if kind not in ("idle", "chaos") and layout != current_layout:
            current_layout = layout
            banner = f"=== {LAYOUT_TEXT.get(layout, layout)}"
            lines.append(paint.bold(banner))
            lines.append("")
        if kind == "idle":
            if any("protocols" in s for s in rows):
                what = ("idle HTTP/2 connections over TLS (ALPN h2, ECDSA; a full handshake, the preface and "
                        "SETTINGS exchange and one request each)")
            elif tls:
                what = "idle TLS keep-alive connections (ECDSA; one full handshake and one request each)"
            else:
                what = "idle keep-alive connections"
            title = (f"=== {case}: {conns:,} {what} held, ran in the {layout} layout, "
                     f"{n_runs} run(s); RSS = sum of VmRSS over the proxy's processes")
            table = [hdr_idle[:-1] + (["negotiated"] if tls else []) + hdr_idle[-1:]]
            for s in rows:
                problems = s["errors_total"]
                kinds = ", ".join(sorted(s.get("client_errors", {})))[:80]
                wrong_proto = (f", protocols {s['protocols']}" if s.get("wrong_protocol") else "")
                ptxt = "0" if problems == 0 else paint.bad(
                    f"!! {s['failed']} failed{f' ({kinds})' if kinds else ''}, "
                    f"{s['closed_by_server_while_idle']} closed while idle, "
                    f"held {fmt_num(s['opened']['min'] if s['opened'] else 0)} of {conns:,}{wrong_proto}")
                table.append([
                    s["proxy"],
                    fmt_spread(s["bytes_per_conn"]),
                    fmt_spread(s["bytes_ratio_vs_nginx"], 2) if s["proxy"] != "nginx" else "1.00",
                    fmt_num(s["opened"]["median"]) if s["opened"] else "-",
                    f"{s['rss_before_kb']['median'] / 1024:.1f} MiB" if s["rss_before_kb"] else "-",
                    f"{s['rss_held_kb']['median'] / 1024:.1f} MiB" if s["rss_held_kb"] else "-",
                    f"{s['rss_after_close_kb']['median'] / 1024:.1f} MiB" if s["rss_after_close_kb"] else "-",
                ] + ([negotiated(s)] if tls else []) + [ptxt])
        elif kind == "chaos":
            title = (f"-- [{layout} layout] case chaos: wrk -t{conns} -c{conns} keep-alive, 2 endpoints, one "
                     f"SIGKILLed at +{opts.get('chaos', {}).get('kill_at_s', 3)} s and restarted at "
                     f"+{opts.get('chaos', {}).get('restart_at_s', 6)} s of a "
                     f"{opts.get('chaos', {}).get('duration_s', 10)} s run: {n_runs} run(s), median (min-max); "
                     f"target: failed <= {conns} (the requests that can be in flight)")
            table = [["proxy", "failed", "non-2xx/socket", "time to eject", "last failure", "time to return",
                      "first served", "p99 after kill", "p99 before", "req/s", "target", "errors"]]

            def secs(sp, digits=0, prefix="+"):
                if sp is None:
                    return "never"
                med = f"{prefix}{sp['median']:.{digits}f}s"
                if sp["n"] < 2 or sp["min"] == sp["max"]:
                    return med
                return f"{med} ({sp['min']:.{digits}f}-{sp['max']:.{digits}f})"

            def lat_spread(sp):
                if sp is None:
                    return "-"
                med = fmt_lat(sp["median"])
                return med if sp["n"] < 2 else f"{med} ({fmt_lat(sp['min'])}-{fmt_lat(sp['max'])})"

            for s in rows:
                e = s["errors_total"]
                etxt = "0" if e == 0 else paint.bad(
                    f"{e} !! " + "; ".join(dict.fromkeys(s.get("problems") or []))[:160])
                never_e = f", never in {s['never_ejected_runs']} run(s)" if s["never_ejected_runs"] and \
                    s["eject_s"] else ""
                never_r = f", never in {s['never_returned_runs']} run(s)" if s["never_returned_runs"] and \
                    s["return_s"] else ""
                met = s["target_met_runs"]
                ttxt = f"met {met}/{s['runs']}" if met == s["runs"] else paint.bad(f"!! met {met}/{s['runs']}")
                nf = s["failed_non2xx"]["median"] if s["failed_non2xx"] else None
                sf = s["failed_socket"]["median"] if s["failed_socket"] else None
                table.append([
                    s["proxy"],
                    fmt_spread(s["failed"]),
                    f"{fmt_num(nf)}/{fmt_num(sf)}",
                    secs(s["eject_s"]) + never_e,
                    secs(s["last_failure_s"], 1),
                    secs(s["return_s"]) + never_r,
                    secs(s["first_served_s"], 1),
                    lat_spread(s["p99_event_us"]),
                    lat_spread(s["p99_before_us"]),
                    fmt_spread(s["rps"]),
                    ttxt,
                    etxt,
                ])
        elif kind == "handshake":
            who = f"{conns} parallel openssl s_time -new" if rows[0]["tool"] == "s_time" else \
                f"wrk, {conns} connections, Connection: close"
            what = "full handshakes" if rows[0]["mode"] == "full" else "resumed handshakes"
            title = (f"-- [{layout} layout] case {case}: TLS 1.3 {what}, {who}, a request per connection: "
                     f"{n_runs} run(s) x {opts.get('duration', '?')} s, median of runs (min-max); "
                     f"CPU = proxy's own CPU time per handshake")
            table = [hdr_hs[:-1] + ["negotiated", hdr_hs[-1]]]
            for s in rows:
                e = s["errors_total"]
                etxt = "0" if e == 0 else paint.bad(
                    f"{e} !! " + "; ".join(dict.fromkeys(s.get("problems") or [])).strip()[:160])
                is_nginx = s["proxy"] == "nginx"
                table.append([
                    s["proxy"],
                    fmt_spread(s["handshakes_per_s"]),
                    fmt_spread(s["proxy_cpu_us_per_handshake"], 1),
                    "1.00" if is_nginx and s["proxy_cpu_us_per_handshake"] else fmt_spread(s["cpu_ratio_vs_nginx"], 2),
                    f"{count(s['client_new'])}/{count(s['client_reused'])}",
                    f"{count(s['server_full'])}/{count(s['server_resumed'])}",
                    negotiated(s),
                    etxt,
                ])
        else:
            h2 = rows[0].get("tool") == "h2load"
            if h2:
                protos = sorted({p for s in rows for p in s.get("protocols", [])})
                title = (f"-- [{layout} layout] case {case}: h2load, {conns} connection(s) x "
                         f"{rows[0].get('streams')} concurrent streams ({'/'.join(protos)}; HTTP/1.1 to the "
                         f"upstream): {n_runs} run(s) x {opts.get('duration', '?')} s after a "
                         f"{opts.get('warmup_s', '?')} s warm-up, median of runs (min-max); latency percentiles "
                         f"from h2load's per-request log; CPU = proxy's own CPU time")
            else:
                title = (f"-- [{layout} layout] case {case}, {conns} connections: {n_runs} run(s) x "
                         f"{opts.get('duration', '?')} s, median of runs (min-max); CPU = proxy's own CPU time")
            table = [hdr_load[:-1] + (["negotiated"] if tls else []) + hdr_load[-1:]]
            for s in rows:
                lat = s["latency_us"]
                e = s["errors_total"]
                etxt = "0" if e == 0 else paint.bad(
                    f"{e} !! " + ",".join(f"{k}={v}" for k, v in s["errors"].items() if v)
                    + ("; " + "; ".join(dict.fromkeys(s.get("problems") or []))[:160] if s.get("problems") else ""))
                is_nginx = s["proxy"] == "nginx"
                table.append([
                    s["proxy"],
                    fmt_spread(s["rps"]),
                    fmt_lat(lat["p50"]["median"] if lat["p50"] else None),
                    fmt_lat(lat["p99"]["median"] if lat["p99"] else None),
                    fmt_lat(lat["p99.9"]["median"] if lat["p99.9"] else None),
                    fmt_spread(s["proxy_cpu_us_per_req"], 2),
                    "1.00" if is_nginx and s["proxy_cpu_us_per_req"] else fmt_spread(s["cpu_ratio_vs_nginx"], 2),
                ] + ([negotiated(s)] if tls else []) + [etxt])
        lines.append(paint.bold(title))
        widths = [max(len(strip_ansi(row[i])) for row in table) for i in range(len(table[0]))]
        left = {0, len(table[0]) - 1}
        if table[0][-2] == "negotiated":
            left.add(len(table[0]) - 2)
        for j, row in enumerate(table):
            cells = []
            for i, c in enumerate(row):
                pad = widths[i] - len(strip_ansi(c))
                cells.append(c + " " * pad if i in left else " " * pad + c)
            lines.append("  " + "  ".join(cells).rstrip())
            if j == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if kind == "chaos":
            lines.append("  per second from the kill (run 1): ok/failed/killed endpoint's responses "
                         "(failed = non-2xx + requests re-sent after a connection failed)")
            for s in rows:
                tl = (s.get("timelines") or [None])[0] or []
                cells = [f"{t['second']:+d}:{t['ok']}/{t['non2xx'] + t['no_response']}/{t['victim']}" for t in tl]
                lines.append(f"    {s['proxy']:<9}" + " ".join(cells))
    return "\n".join(lines)


def strip_ansi(s):
    return re.sub(r"\033\[[0-9;]*m", "", s)


# ----------------------------------------------------------------------------- machine info


def run_cmd(args, timeout=10):
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return None


def first_line(s):
    return s.splitlines()[0].strip() if s else None


def machine_info(repo, coregate_bin, git_commit=None, git_dirty=None):
    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    commit = git_commit or first_line(run_cmd(["git", "-C", repo, "rev-parse", "HEAD"]))
    if git_dirty is None:
        git_dirty = bool(run_cmd(["git", "-C", repo, "--no-optional-locks", "status", "--porcelain",
                                  "--untracked-files=no"]))
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": platform.node(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "os": first_line(run_cmd(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])),
        "cpu_model": cpu_model,
        "mem_total_bytes": mem_total,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "loadavg": open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else None,
        "git_commit": commit,
        "git_dirty": git_dirty,
        "tools": {
            "wrk": first_line(run_cmd(["wrk", "-v"])),
            "nginx": first_line(run_cmd(["nginx", "-v"])),
            "haproxy": first_line(run_cmd(["haproxy", "-v"])),
            "h2load": first_line(run_cmd(["h2load", "--version"])),
            "openssl": first_line(run_cmd(["openssl", "version"])),
            "python": sys.version.split()[0],
            "rustc": first_line(run_cmd(["rustc", "--version"])),
            "coregate": first_line(run_cmd([coregate_bin, "--version"])) if coregate_bin else None,
        },
    }


# ----------------------------------------------------------------------------- SVG


class Svg:
    def __init__(self, width):
        self.width = width
        self.parts = []
        self.y = 0

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222", rotate=None, extra=""):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}"{tr}{extra}>{escape(str(s))}</text>'
        )

    def rect(self, x, y, w, h, fill, stroke="none", sw=0, title=None, opacity=1.0):
        t = f"<title>{escape(title)}</title>" if title else ""
        self.parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" height="{max(h, 0):.1f}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{sw}" fill-opacity="{opacity}">{t}</rect>'
        )

    def line(self, x1, y1, x2, y2, stroke="#444", sw=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{sw}"{d}/>'
        )

    def render(self, height):
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{height:.0f}" '
            f'viewBox="0 0 {self.width} {height:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
            f'<rect x="0" y="0" width="{self.width}" height="{height:.0f}" fill="white"/>\n'
            + "\n".join(self.parts)
            + "\n</svg>\n"
        )


def nice_max(v):
    if v <= 0:
        return 1.0
    import math

    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def fmt_axis(v, unit):
    if unit == "req/s":
        return f"{v / 1000:.0f}k" if v >= 1000 else f"{v:.0f}"
    if unit == "bytes":
        if v < 1024:
            return f"{v:.0f} B"
        return f"{v / 1024:.0f} KiB" if v % 1024 == 0 else f"{v / 1024:.1f} KiB"
    return f"{v:g}"


def bar_panel(svg, x0, y0, w, h, title, groups, proxies, value_fn, unit, label_fn, group_label=None):
    """Grouped bars: one group per (case, connections), one bar per proxy, min-max whiskers."""
    svg.text(x0, y0 + 14, title, size=13, weight="bold")
    top, bottom, left = y0 + 30, y0 + h - 38, x0 + 52
    right = x0 + w - 8
    vmax = 0.0
    for g in groups:
        for p in proxies:
            s = value_fn(g, p)
            if s:
                vmax = max(vmax, s["max"], s["median"])
    vmax = nice_max(vmax * 1.12)
    ph = bottom - top
    for i in range(6):
        v = vmax * i / 5
        yy = bottom - ph * i / 5
        svg.line(left, yy, right, yy, stroke="#e3e3e3")
        svg.text(left - 5, yy + 4, fmt_axis(v, unit), size=10, anchor="end", fill="#555")
    svg.line(left, bottom, right, bottom, stroke="#444")
    if not groups:
        return
    gw = (right - left) / len(groups)
    bw = min(46.0, (gw - 16) / max(1, len(proxies)))
    for gi, g in enumerate(groups):
        gx = left + gi * gw + (gw - bw * len(proxies)) / 2
        for pi, p in enumerate(proxies):
            s = value_fn(g, p)
            bx = gx + pi * bw
            if not s:
                svg.text(bx + bw / 2, bottom - 4, "n/a", size=9, anchor="middle", fill="#999")
                continue
            bh = ph * s["median"] / vmax
            err = s.get("errors", 0)
            svg.rect(bx + 2, bottom - bh, bw - 4, bh, PROXY_COLORS.get(p, "#444"),
                     stroke="#e00000" if err else "none", sw=3 if err else 0,
                     title=f"{p} {g[0]} c={g[1]}: median {label_fn(s['median'])} (min {label_fn(s['min'])}, max {label_fn(s['max'])}, {s['n']} runs)")
            if s["n"] > 1 and s["max"] > s["min"]:
                cx = bx + bw / 2
                y1, y2 = bottom - ph * s["min"] / vmax, bottom - ph * s["max"] / vmax
                svg.line(cx, y1, cx, y2, stroke="#111", sw=1.2)
                svg.line(cx - 4, y1, cx + 4, y1, stroke="#111", sw=1.2)
                svg.line(cx - 4, y2, cx + 4, y2, stroke="#111", sw=1.2)
            ty = bottom - max(bh, ph * s["max"] / vmax) - 4
            svg.text(bx + bw / 2, ty, label_fn(s["median"]), size=10 if bw > 34 else 9, anchor="middle")
            if err:
                svg.text(bx + bw / 2, ty - 12, "errors!", size=10, anchor="middle", fill="#e00000", weight="bold")
        # Case on one line, connections on the next: five groups fit in a half-width panel.
        label = group_label(g) if group_label else f"{g[0]}\n{g[1]} conns"
        for li, text in enumerate(label.split("\n")):
            svg.text(left + gi * gw + gw / 2, bottom + 15 + 12 * li, text, size=11, anchor="middle")


def latency_panel(svg, x0, y0, w, h, title, groups, proxies, lat_fn, group_label=None):
    """Log-scale bars of p50 / p99 / p99.9 per proxy, grouped by (case, connections)."""
    import math

    svg.text(x0, y0 + 14, title, size=13, weight="bold")
    top, bottom, left = y0 + 30, y0 + h - 38, x0 + 52
    right = x0 + w - 8
    vals = [v for g in groups for p in proxies for v in (lat_fn(g, p) or {}).values() if v]
    if not vals:
        return
    lo = 10 ** math.floor(math.log10(max(1.0, min(vals))))
    # Room above the tallest bar for its rotated label (about 0.7 decade).
    hi = 10 ** math.ceil(math.log10(max(vals)) + 0.7)
    ph = bottom - top

    def ypos(v):
        v = max(v, lo)
        return bottom - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    d = lo
    while d <= hi * 1.0001:
        yy = ypos(d)
        svg.line(left, yy, right, yy, stroke="#e3e3e3")
        label = f"{d:.0f}us" if d < 1000 else (f"{d / 1000:.0f}ms" if d < 1e6 else f"{d / 1e6:.0f}s")
        svg.text(left - 5, yy + 4, label, size=10, anchor="end", fill="#555")
        d *= 10
    svg.line(left, bottom, right, bottom, stroke="#444")
    gw = (right - left) / len(groups)
    pw = min(66.0, (gw - 16) / max(1, len(proxies)))
    bw = pw / 3 - 1
    shades = {"p50": 0.45, "p99": 0.75, "p99.9": 1.0}
    for gi, g in enumerate(groups):
        gx = left + gi * gw + (gw - pw * len(proxies)) / 2
        for pi, p in enumerate(proxies):
            lat = lat_fn(g, p)
            px = gx + pi * pw
            if not lat:
                continue
            for ki, k in enumerate(["p50", "p99", "p99.9"]):
                v = lat.get(k)
                if not v:
                    continue
                bx = px + ki * (bw + 1) + 1
                yy = ypos(v)
                svg.rect(bx, yy, bw, bottom - yy, PROXY_COLORS.get(p, "#444"), opacity=shades[k],
                         title=f"{p} {g[0]} c={g[1]} {k}: {fmt_lat(v)}")
                svg.text(bx + bw / 2 + 3, yy - 3, f"{k} {fmt_lat(v)}", size=8.5, rotate=-90)
        label = group_label(g).replace("\n", ", ") if group_label else f"{g[0]}, {g[1]} conns"
        svg.text(left + gi * gw + gw / 2, bottom + 16, label, size=11, anchor="middle")


def render_svg(summary, meta):
    W = 1280
    svg = Svg(W)
    opts = meta.get("options", {})
    m = meta.get("machine", {})
    svg.text(20, 28, "Coregate load test: proxies with one worker each in front of a 2-endpoint nginx upstream",
             size=17, weight="bold")
    svg.text(20, 48, f"{m.get('date', '')}   commit {str(m.get('git_commit', ''))[:12]}{' (dirty)' if m.get('git_dirty') else ''}"
             f"   {m.get('cpu_model', '')}, {m.get('nproc', '?')} CPUs, kernel {m.get('kernel', '')}"
             f"   {opts.get('runs', '?')} run(s) x {opts.get('duration', '?')} s, medians; whiskers = min-max",
             size=11, fill="#444")
    # Legend.
    lx = 20
    for p in [p for p in PROXY_ORDER if p in {s["proxy"] for s in summary}]:
        svg.rect(lx, 58, 14, 14, PROXY_COLORS[p])
        svg.text(lx + 19, 70, p, size=12)
        lx += 110
    svg.text(lx + 10, 70, "red outline = errors in that measurement; hover a bar for its exact figures",
             size=11, fill="#444")
    y = 86
    layouts = [lay for lay in opts.get("layouts", [])
               if any(s["layout"] == lay and s["kind"] in ("load", "handshake") for s in summary)]
    by = {(s["layout"], s["case"], s["connections"], s["proxy"]): s for s in summary}
    case_order = {c: i for i, c in enumerate(opts.get("cases", []))}
    for layout in layouts:
        rows = [s for s in summary if s["layout"] == layout and s["kind"] == "load"]
        groups = sorted({(s["case"], s["connections"]) for s in rows}, key=lambda g: (case_order.get(g[0], 9), g[1]))
        proxies = sorted({s["proxy"] for s in rows}, key=proxy_rank)
        hs_rows = [s for s in summary if s["layout"] == layout and s["kind"] == "handshake"]
        svg.rect(10, y, W - 20, 24, "#f0f0f0")
        svg.text(18, y + 17, LAYOUT_TEXT.get(layout, layout), size=13, weight="bold")
        y += 30

        def val(key, layout=layout):
            def f(g, p):
                s = by.get((layout, g[0], g[1], p))
                if not s or not s.get(key):
                    return None
                d = dict(s[key])
                d["errors"] = s["errors_total"]
                return d
            return f

        half = (W - 30) / 2
        streams = {(s["case"], s["connections"]): s.get("streams") for s in rows}

        def load_label(g, streams=streams):
            if streams.get(g):
                return f"{g[0]}\n{g[1]} conns x {streams[g]} streams"
            return f"{g[0]}\n{g[1]} conns"

        if rows:
            bar_panel(svg, 10, y, half, 300, "Requests per second (higher is better)", groups, proxies,
                      val("rps"), "req/s", lambda v: f"{v / 1000:.1f}k", load_label)
            cpu_proxies = [p for p in proxies if p != "direct"]
            bar_panel(svg, 20 + half, y, half, 300, "Proxy CPU time per request, microseconds (lower is better)",
                      groups, cpu_proxies, val("proxy_cpu_us_per_req"), "us", lambda v: f"{v:.2f}", load_label)
            y += 306

            def lat(g, p, layout=layout):
                s = by.get((layout, g[0], g[1], p))
                if not s:
                    return None
                return {k: (s["latency_us"][k] or {}).get("median") for k in ("p50", "p99", "p99.9")}

            latency_panel(svg, 10, y, W - 20, 330,
                          "Latency percentiles p50 / p99 / p99.9 (light to dark), log scale (lower is better)",
                          groups, proxies, lat, load_label)
            y += 340
        if hs_rows:
            hs_groups = sorted({(s["case"], s["connections"]) for s in hs_rows},
                               key=lambda g: (case_order.get(g[0], 9), g[1]))
            hs_proxies = sorted({s["proxy"] for s in hs_rows}, key=proxy_rank)
            tools = {(s["case"], s["connections"]): s["tool"] for s in hs_rows}

            def hs_label(g):
                return f"{g[0]}\n{g[1]} {'s_time clients' if tools.get(g) == 's_time' else 'conns (wrk)'}"

            bar_panel(svg, 10, y, half, 300, "TLS 1.3 handshakes per second (higher is better)", hs_groups,
                      hs_proxies, val("handshakes_per_s"), "req/s", lambda v: f"{v / 1000:.2f}k", hs_label)
            bar_panel(svg, 20 + half, y, half, 300, "Proxy CPU time per handshake, microseconds (lower is better)",
                      hs_groups, hs_proxies, val("proxy_cpu_us_per_handshake"), "us", lambda v: f"{v:.0f}", hs_label)
            y += 306
    idle = [s for s in summary if s["kind"] == "idle"]
    if idle:
        layout = idle[0]["layout"]
        conns = idle[0]["connections"]
        igroups = sorted({(s["case"], s["connections"]) for s in idle}, key=lambda g: case_order.get(g[0], 9))
        svg.rect(10, y, W - 20, 24, "#f0f0f0")
        svg.text(18, y + 17, f"idle memory: RSS growth per idle keep-alive connection (plain HTTP / TLS / "
                 f"HTTP/2 over TLS), {conns:,} connections held (ran in the {layout} layout)", size=13, weight="bold")
        y += 30
        proxies = sorted({s["proxy"] for s in idle}, key=proxy_rank)

        def ival(g, p):
            s = next((s for s in idle if s["proxy"] == p and s["case"] == g[0]), None)
            if not s or not s.get("bytes_per_conn"):
                return None
            d = dict(s["bytes_per_conn"])
            d["errors"] = s["errors_total"]
            return d

        bar_panel(svg, 10, y, (W - 30) / 2 if len(igroups) < 2 else W - 20, 300,
                  "Bytes of proxy RSS per idle connection (lower is better)",
                  igroups, proxies, ival, "bytes", lambda v: f"{v:,.0f} B", lambda g: g[0])
        y += 306
    return svg.render(y + 10)


# ----------------------------------------------------------------------------- chaos

CHAOS_SLOT_S = 0.1   # the chaos wrk script counts per 100 ms slot, from the planned kill
CHAOS_LAT_BASE = 1.02  # and buckets latencies 2% wide


def parse_chaos_slots(text):
    """The chaos script's LT_SLOT lines: {slot: {ok, bad, victim, lost}}, and LT_LAT lines:
    {slot: {bucket: count}} (key = slot * 1000 + bucket)."""
    slots, lat = {}, {}
    for m in re.finditer(r"^LT_SLOT (-?\d+) ok=(\d+) bad=(\d+) victim=(\d+) lost=(\d+)$", text, re.M):
        slots[int(m.group(1))] = {"ok": int(m.group(2)), "bad": int(m.group(3)),
                                  "victim": int(m.group(4)), "lost": int(m.group(5))}
    for m in re.finditer(r"^LT_LAT (-?\d+) (\d+)$", text, re.M):
        key, n = int(m.group(1)), int(m.group(2))
        slot = key // 1000  # floor division: right for negative slots too
        lat.setdefault(slot, {})
        b = key - slot * 1000
        lat[slot][b] = lat[slot].get(b, 0) + n
    return slots, lat


def hist_percentile(hists, p):
    """Nearest-rank percentile (microseconds, bucket's geometric middle) of merged histograms."""
    merged = {}
    for h in hists:
        for b, n in h.items():
            merged[b] = merged.get(b, 0) + n
    total = sum(merged.values())
    if not total:
        return None
    rank = max(1, -(-total * p // 100))
    seen = 0
    for b in sorted(merged):
        seen += merged[b]
        if seen >= rank:
            return CHAOS_LAT_BASE ** (b + 0.5)
    return None


def cmd_record_chaos(a):
    text = ""
    if a.wrk_output and os.path.exists(a.wrk_output):
        with open(a.wrk_output, errors="replace") as f:
            text = f.read()
    w = parse_wrk(text)
    slots, lat = parse_chaos_slots(text)
    per_s = int(round(1 / CHAOS_SLOT_S))
    gap_s = int(a.restart_at - a.kill_at)         # seconds from the kill to the restart
    restart_slot = gap_s * per_s
    end_slot = int((a.duration - a.kill_at) * per_s)
    start_slot = -int(a.kill_at * per_s)

    def fails(sl):
        c = slots.get(sl) or {}
        return c.get("bad", 0) + c.get("lost", 0)

    def count(sl, k):
        return (slots.get(sl) or {}).get(k, 0)

    errs = w.get("errors") or {}
    non2xx = sum(c["bad"] for c in slots.values())
    socket = sum(int(errs.get(k, 0)) for k in ("connect", "read", "write", "timeout"))
    failed = non2xx + socket
    # Seconds counted from the kill: second k is [kill + k, kill + k + 1).
    eject_s = next((k for k in range(gap_s) if sum(fails(k * per_s + i) for i in range(per_s)) == 0), None)
    fail_slots = [sl for sl in range(0, restart_slot) if fails(sl)]
    last_failure_s = (max(fail_slots) + 1) * CHAOS_SLOT_S if fail_slots else 0.0
    after_eject = sum(fails(sl) for sl in range(((eject_s or 0) + 1) * per_s, restart_slot)) if eject_s is not None else None
    # Seconds counted from the restart: second k is [restart + k, restart + k + 1).
    served = [sl for sl in range(restart_slot, end_slot + 1) if count(sl, "victim")]
    first_served_s = (served[0] - restart_slot) * CHAOS_SLOT_S if served else None
    return_s = int((served[0] - restart_slot) // per_s) if served else None
    before = [sl for sl in slots if sl < 0]
    failed_before = sum(fails(sl) for sl in before)
    resp_before = sum(count(sl, "ok") + count(sl, "bad") for sl in before)
    victim_before = sum(count(sl, "victim") for sl in before)
    victim_share_before = victim_before / resp_before if resp_before else None
    failed_after_restart = sum(fails(sl) for sl in slots if sl >= restart_slot)
    p99_event = hist_percentile([h for sl, h in lat.items() if sl >= 0], 99)
    p99_before = hist_percentile([h for sl, h in lat.items() if sl < 0], 99)
    timeline = []
    for k in range(start_slot // per_s, (end_slot + per_s - 1) // per_s):
        sls = range(k * per_s, (k + 1) * per_s)
        timeline.append({
            "second": k,  # from the kill
            "ok": sum(count(sl, "ok") for sl in sls),
            "non2xx": sum(count(sl, "bad") for sl in sls),
            "no_response": sum(count(sl, "lost") for sl in sls),
            "victim": sum(count(sl, "victim") for sl in sls),
            "p99_us": hist_percentile([lat[sl] for sl in sls if sl in lat], 99),
        })
    t_kill = a.t_kill
    base = a.base_us / 1e6 if a.base_us else None
    rec = {
        "kind": "chaos",
        "layout": a.layout,
        "run": a.run,
        "case": "chaos",
        "connections": a.connections,
        "proxy": a.proxy,
        "duration_requested_s": a.duration,
        "kill_at_s": a.kill_at,
        "restart_at_s": a.restart_at,
        "kill_late_ms": round((t_kill - base) * 1000, 1) if (t_kill and base) else None,
        "restart_late_ms": round((a.t_restart - base - gap_s) * 1000, 1) if (a.t_restart and base) else None,
        "restart_listening_ms": round((a.t_listen - a.t_restart) * 1000, 1) if (a.t_listen and a.t_restart) else None,
        "requests": w.get("requests", 0),
        "rps": w.get("rps", 0),
        "latency_us": w.get("latency_us"),
        "failed": failed,
        "failed_non2xx": non2xx,
        "failed_socket": socket,
        "wrk_errors": errs,
        "no_response_reissued": sum(c["lost"] for c in slots.values()),
        "failed_before_kill": failed_before,
        "failed_after_restart": failed_after_restart,
        "failed_after_eject": after_eject,
        "eject_s": eject_s,
        "last_failure_s": last_failure_s if slots else None,
        "return_s": return_s,
        "first_served_s": first_served_s,
        "p99_event_us": p99_event,
        "p99_before_us": p99_before,
        "victim_share_before": victim_share_before,
        "target": a.connections,
        "target_met": bool(slots) and failed <= a.connections,
        "timeline": timeline,
        "wrk_exit_code": a.wrk_rc,
        "wrk_result_parsed": w["parsed"] and bool(slots),
        "proxy_log": log_lines(a.log),
        "wrk_output": "\n".join(ln for ln in text.splitlines() if not ln.startswith(("LT_SLOT", "LT_LAT"))),
    }
    problems = []
    if a.failure:
        problems.append(a.failure)
    if not rec["wrk_result_parsed"] or a.wrk_rc != 0:
        problems.append(f"wrk without a result (exit code {a.wrk_rc})")
    if failed_before:
        problems.append(f"{failed_before} failed before the kill")
    if victim_share_before is not None and victim_share_before < 0.25:
        problems.append(f"the endpoint to kill served only {victim_share_before:.0%} before the kill")
    rec["problems"] = problems
    rec["errors"] = {"harness": len(problems)}
    rec["errors_total"] = len(problems)
    with open(a.raw, "a") as f:
        f.write(json.dumps(rec) + "\n")
    flag = "" if not problems else "  ERRORS " + "; ".join(problems)
    print(
        f"  [{a.layout} run {a.run}] chaos     c={a.connections:<4} {a.proxy:<8} "
        f"{human_rate(rec['rps']):>7} req/s  failed {failed} ({non2xx} non-2xx, {socket} socket)  "
        f"eject {'-' if eject_s is None else f'+{eject_s}s'} (last failure +{last_failure_s:.1f}s)  "
        f"return {'-' if return_s is None else f'+{return_s}s'} "
        f"(first served +{'-' if first_served_s is None else f'{first_served_s:.1f}'}s)  "
        f"p99 after kill {fmt_lat(p99_event)}{flag}",
        flush=True,
    )


# ----------------------------------------------------------------------------- final


def cmd_final(a):
    records = []
    if os.path.exists(a.raw):
        with open(a.raw) as f:
            records = [json.loads(line) for line in f if line.strip()]
    options = json.loads(a.options) if a.options else {}
    meta = {"options": options, "machine": machine_info(
        a.repo, a.coregate_bin, a.git_commit, None if a.git_dirty is None else a.git_dirty == "true"), "notes": a.note or []}
    summary = summarise(records)
    color = a.color == "always" or (a.color == "auto" and sys.stdout.isatty())
    paint = Painter(color)
    print(render_table(summary, meta, paint))
    bad = [s for s in summary if s["errors_total"]]
    print()
    if bad:
        print(paint.bad("!! NON-ZERO ERRORS in: " + "; ".join(
            f"{s['layout']}/{s['case']}/c={s['connections']}/{s['proxy']} ({s['errors_total']})" for s in bad)))
    else:
        print("errors: none (every run of every proxy: 0 non-2xx, 0 socket errors"
              + ("; chaos: its failed requests are its figure, not errors)" if any(
                  s["kind"] == "chaos" for s in summary) else ")"))
    chaos = [s for s in summary if s["kind"] == "chaos"]
    if chaos:
        print("chaos (target: failed requests <= connections, the requests that can be in flight to the "
              "killed endpoint): " + "; ".join(
                  f"{s['layout']}/{s['proxy']} {'met' if s['target_met_runs'] == s['runs'] else 'MISSED'} "
                  f"({s['target_met_runs']}/{s['runs']} runs, failed median "
                  f"{fmt_num(s['failed']['median']) if s['failed'] else '-'})" for s in chaos))
    tls = options.get("tls") or {}
    if tls:
        seen = {}
        for s in summary:
            for n in s.get("negotiated", []):
                seen.setdefault(s["proxy"], set()).add(n)
        client = f"clients pinned to {tls['client_suite']}" if tls.get("client_suite") else \
            "clients with OpenSSL's default suites"
        print(f"TLS ({client}; every proxy must negotiate {tls.get('expected') or '?'}); negotiated, per proxy:")
        for p in sorted(seen, key=proxy_rank):
            print(f"  {p}: " + " | ".join(sorted(seen[p])))
    logs = {}
    for r in records:
        for ln in r.get("proxy_log") or []:
            norm = re.sub(r"\d", "#", ln)[:200]
            logs.setdefault(r["proxy"], {}).setdefault(norm, ln)
    if logs:
        print("proxy log messages (one example of each kind, digits folded):")
        for p, msgs in logs.items():
            for ln in list(msgs.values())[:10]:
                print(f"  {p}: {ln[:220]}")
    os.makedirs(a.out_dir, exist_ok=True)
    doc = {"meta": meta, "summary": summary, "runs": records}
    jpath = os.path.join(a.out_dir, f"{a.stamp}.json")
    spath = os.path.join(a.out_dir, f"{a.stamp}.svg")
    with open(jpath, "w") as f:
        json.dump(doc, f, indent=1)
    with open(spath, "w") as f:
        f.write(render_svg(summary, meta))
    shutil.copyfile(jpath, os.path.join(a.out_dir, "latest.json"))
    shutil.copyfile(spath, os.path.join(a.out_dir, "latest.svg"))
    print(f"results: {jpath}\nchart:   {spath}\n(copies: latest.json, latest.svg)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    rl = sub.add_parser("record-load")
    rl.add_argument("--raw", required=True)
    rl.add_argument("--wrk-output", required=True)
    rl.add_argument("--wrk-rc", type=int, default=0)
    rl.add_argument("--layout", required=True)
    rl.add_argument("--run", type=int, required=True)
    rl.add_argument("--case", required=True)
    rl.add_argument("--connections", type=int, required=True)
    rl.add_argument("--proxy", required=True)
    rl.add_argument("--duration", type=float, required=True)
    rl.add_argument("--wall", type=float)
    rl.add_argument("--proxy-ticks", type=int)
    rl.add_argument("--upstream-ticks", type=int)
    rl.add_argument("--clk-tck", type=int, required=True)
    rl.add_argument("--log")
    rl.add_argument("--sys-before", help="/proc/stat cpu lines before, ';'-separated")
    rl.add_argument("--sys-after", help="/proc/stat cpu lines after")
    rl.add_argument("--failure", help="the measurement failed: why (counted as an error)")
    rl.add_argument("--negotiated", help="TLS: what openssl s_client negotiated before measuring")
    rl.add_argument("--expected-suite", help="TLS: the version and suite every proxy must negotiate")

    r2 = sub.add_parser("record-h2load")
    r2.add_argument("--raw", required=True)
    r2.add_argument("--h2load-output", required=True)
    r2.add_argument("--h2load-rc", type=int, default=0)
    r2.add_argument("--request-log", help="h2load --log-file of the measured run")
    r2.add_argument("--layout", required=True)
    r2.add_argument("--run", type=int, required=True)
    r2.add_argument("--case", required=True)
    r2.add_argument("--connections", type=int, required=True)
    r2.add_argument("--streams", type=int, required=True, help="concurrent streams per connection (-m)")
    r2.add_argument("--proxy", required=True)
    r2.add_argument("--duration", type=float, required=True)
    r2.add_argument("--warmup", type=float)
    r2.add_argument("--wall", type=float)
    r2.add_argument("--proxy-ticks", type=int)
    r2.add_argument("--upstream-ticks", type=int)
    r2.add_argument("--clk-tck", type=int, required=True)
    r2.add_argument("--log")
    r2.add_argument("--sys-before")
    r2.add_argument("--sys-after")
    r2.add_argument("--failure")
    r2.add_argument("--expect-protocol", help="h2 or h2c: what h2load must report as the application protocol")
    r2.add_argument("--negotiated")
    r2.add_argument("--expected-suite")

    rh = sub.add_parser("record-handshake")
    rh.add_argument("--raw", required=True)
    rh.add_argument("--client-output", action="append", help="an s_time or wrk output (repeatable)")
    rh.add_argument("--client-rc", type=int, default=0, help="the highest exit code of the clients")
    rh.add_argument("--layout", required=True)
    rh.add_argument("--run", type=int, required=True)
    rh.add_argument("--case", required=True)
    rh.add_argument("--proxy", required=True)
    rh.add_argument("--mode", choices=["full", "resumed"], required=True)
    rh.add_argument("--tool", choices=["s_time", "wrk"], required=True)
    rh.add_argument("--clients", type=int, required=True, help="s_time processes or wrk connections")
    rh.add_argument("--duration", type=float, required=True)
    rh.add_argument("--wall", type=float)
    rh.add_argument("--proxy-ticks", type=int)
    rh.add_argument("--upstream-ticks", type=int)
    rh.add_argument("--clk-tck", type=int, required=True)
    rh.add_argument("--log")
    rh.add_argument("--sys-before")
    rh.add_argument("--sys-after")
    rh.add_argument("--server-before", help='the proxy\'s handshake counts before: "FULL RESUMED" ("-" = not counted)')
    rh.add_argument("--server-after", help="the same after the measured run")
    rh.add_argument("--negotiated")
    rh.add_argument("--expected-suite")
    rh.add_argument("--failure")

    ri = sub.add_parser("record-idle")
    ri.add_argument("--raw", required=True)
    ri.add_argument("--client-output", required=True)
    ri.add_argument("--layout", required=True)
    ri.add_argument("--run", type=int, required=True)
    ri.add_argument("--proxy", required=True)
    ri.add_argument("--requested", type=int, required=True)
    ri.add_argument("--rss-before", type=int, required=True)
    ri.add_argument("--rss-held", type=int, required=True)
    ri.add_argument("--rss-after", type=int, required=True)
    ri.add_argument("--log")
    ri.add_argument("--case", default="idle-memory")
    ri.add_argument("--negotiated")
    ri.add_argument("--expected-suite")
    ri.add_argument("--expect-protocol", help="the application protocol every held connection must have (h2)")

    rc = sub.add_parser("record-chaos")
    rc.add_argument("--raw", required=True)
    rc.add_argument("--wrk-output", required=True, help="wrk's output with the chaos script's LT_ lines")
    rc.add_argument("--wrk-rc", type=int, default=0)
    rc.add_argument("--layout", required=True)
    rc.add_argument("--run", type=int, required=True)
    rc.add_argument("--proxy", required=True)
    rc.add_argument("--connections", type=int, required=True)
    rc.add_argument("--duration", type=float, required=True, help="seconds of the wrk run")
    rc.add_argument("--kill-at", type=float, required=True, help="planned kill, seconds into the run")
    rc.add_argument("--restart-at", type=float, required=True, help="planned restart, seconds into the run")
    rc.add_argument("--base-us", type=float, help="the planned kill, epoch microseconds (slot 0 of the script)")
    rc.add_argument("--t-start", type=float, help="epoch seconds: wrk started")
    rc.add_argument("--t-kill", type=float, help="epoch seconds: SIGKILL sent")
    rc.add_argument("--t-restart", type=float, help="epoch seconds: the endpoint started again")
    rc.add_argument("--t-listen", type=float, help="epoch seconds: it listened again")
    rc.add_argument("--log")
    rc.add_argument("--failure")

    fi = sub.add_parser("final")
    fi.add_argument("--raw", required=True)
    fi.add_argument("--out-dir", required=True)
    fi.add_argument("--stamp", required=True)
    fi.add_argument("--repo", required=True)
    fi.add_argument("--coregate-bin")
    fi.add_argument("--git-commit", help="the commit built (default: HEAD now)")
    fi.add_argument("--git-dirty", choices=["true", "false"], help="uncommitted changes when built")
    fi.add_argument("--options", help="JSON object of the harness options")
    fi.add_argument("--note", action="append", help="a note to keep in the JSON (repeatable)")
    fi.add_argument("--color", choices=["auto", "always", "never"], default="auto")

    a = p.parse_args()
    {"record-load": cmd_record_load, "record-h2load": cmd_record_h2load, "record-handshake": cmd_record_handshake,
     "record-idle": cmd_record_idle, "record-chaos": cmd_record_chaos, "final": cmd_final}[a.cmd](a)


if __name__ == "__main__":
    main()
