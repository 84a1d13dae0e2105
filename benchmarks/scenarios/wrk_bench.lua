-- wrk script of the dotrio benchmark suite (benchmarks/_load.py runs it).
-- Environment: BENCH_METHOD (GET/POST), BENCH_PATHS (a file, one path a line),
-- BENCH_RANDOM ("1": a random path per request, else in turn).
-- With one path no request() hook is defined, so wrk's hot path runs no Lua.
-- done() prints one line "BENCHJSON {...}" with the counts and the latency
-- quantiles the suite turns back into a histogram.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
if wrk.method == "POST" then
  wrk.headers["Content-Length"] = "0"
end

local paths = {}
local f = io.open(os.getenv("BENCH_PATHS") or "", "r")
if f then
  for line in f:lines() do
    if #line > 0 then paths[#paths + 1] = line end
  end
  f:close()
end

if #paths > 0 then
  wrk.path = paths[1]
end

if #paths > 1 then
  local reqs = {}
  local n = #paths
  local shuffle = os.getenv("BENCH_RANDOM") == "1"
  local i = 0
  function setup(thread)
    thread:set("seed", math.random(1, 1000000))
  end
  function init(args)
    -- Pre-rendered here, not at load: wrk adds the Host header only after
    -- the script is loaded.
    for k, p in ipairs(paths) do
      reqs[k] = wrk.format(nil, p)
    end
    math.randomseed(seed or os.time())
    i = math.random(0, n - 1)
  end
  function request()
    if shuffle then
      return reqs[math.random(1, n)]
    end
    i = i + 1
    return reqs[(i % n) + 1]
  end
end

function done(summary, latency, requests)
  local q = {}
  local p = 0.5
  -- Quantiles every 0.5% to p99, then finer into the tail.
  while p <= 99.0 do
    q[#q + 1] = string.format("[%g,%d]", p, latency:percentile(p))
    p = p + 0.5
  end
  for _, t in ipairs({99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100}) do
    q[#q + 1] = string.format("[%g,%d]", t, latency:percentile(t))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"quantiles":[%s]}\n',
    summary.requests, summary.duration, summary.bytes, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(q, ",")))
end
