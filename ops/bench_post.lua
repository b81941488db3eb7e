-- wrk script for ./ops/bench: POSTs heart-rate readings and prints one machine-readable line.
--   wrk ... -s ops/bench_post.lua http://127.0.0.1:PORT/metrics/heart-rate -- single PREFIX
--     every request is a distinct reading: user PREFIX-t<thread>-u<n % 1000>, device_a or
--     device_b, a timestamp 1 ms after the thread's previous one (from 2024-01-01T00:00:00Z)
--   wrk ... -s ops/bench_post.lua http://127.0.0.1:PORT/metrics/heart-rate/batch -- batch F...
--     cycles through the pre-generated JSON bodies in files F... (written by ops/bench.py)

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local mode
local prefix
local n = 0
local prepared = {}
local BASE_S = 1704067200 -- 2024-01-01T00:00:00Z

function init(args)
  mode = args[1]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "single" then
    prefix = args[2] .. "-t" .. tostring(tid)
  elseif mode == "batch" then
    for i = 2, #args do
      local f = assert(io.open(args[i], "rb"))
      prepared[#prepared + 1] = wrk.format(nil, nil, nil, f:read("*a"))
      f:close()
    end
    assert(#prepared > 0, "batch mode needs body files")
  else
    error("mode must be 'single' or 'batch', not " .. tostring(mode))
  end
end

function request()
  n = n + 1
  if mode == "batch" then
    return prepared[(n - 1) % #prepared + 1]
  end
  local seconds = BASE_S + math.floor(n / 1000)
  local body = string.format(
    '{"user_id":"%s-u%d","device_id":"%s","timestamp":"%s.%03dZ","heart_rate":%d}',
    prefix, n % 1000, (math.floor(n / 1000) % 2 == 0) and "device_a" or "device_b",
    os.date("!%Y-%m-%dT%H:%M:%S", seconds), n % 1000, 50 + (n * 7) % 100)
  return wrk.format(nil, nil, nil, body)
end

dofile("ops/bench_result.lua") -- done(): the BENCH_RESULT line (wrk runs from the repo root)
