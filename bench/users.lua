-- wrk script for scripts/bench-envoy.sh: every request carries a distinct x-user-id, so the
-- filter hashes a new key each time, and the run ends with one machine-readable line.
local n = 0

request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["Host"] = "checkout.local", ["x-user-id"] = "user-" .. n })
end

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d requests=%d errors=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99), summary.requests, errors))
end
