-- wrk driver for llmgateway's bench: POSTs an OpenAI chat body, reports JSON.
--
-- Configured by environment variables (read in every wrk thread):
--   BENCH_AUTH          the bearer value (a gateway token, or a real key for direct/bare)
--   BENCH_STREAM        "1" asks for a streamed answer ("stream": true)
-- `done` prints one line `BENCHJSON {...}` with counts and latency percentiles in
-- microseconds, which bench/wrk_load.py parses.

local auth = os.getenv("BENCH_AUTH") or ""
local stream = os.getenv("BENCH_STREAM") == "1"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a terse assistant."},'
  .. '{"role":"user","content":"Say hello in one short sentence, please."}],'
  .. '"temperature":0.2,"max_tokens":64,"stream":' .. (stream and "true" or "false") .. '}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
