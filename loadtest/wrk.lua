-- One wrk script for every load case of loadtest/run.
--   LT_CLOSE=1  sends "Connection: close" on each request (the `close` case: a new connection
--               per request); unset, the request is wrk's plain keep-alive GET.
-- done() prints one machine-readable line with the figures wrk's summary lacks (p99.9) and
-- the error counters; report.py parses it (latencies in microseconds).
if os.getenv("LT_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LT_RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d"
      .. " p50=%d p75=%d p90=%d p99=%d p999=%d mean=%.1f max=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
