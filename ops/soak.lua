-- wrk script for ./ops/soak: POSTs of all three metrics; every request's readings are
-- distinct identities, so nothing is overwritten however long the load runs.
--   wrk ... -s ops/soak.lua http://127.0.0.1:PORT -- single PREFIX
--     cycles POST /metrics/heart-rate, /metrics/steps, /metrics/calories and /readings (one
--     record with all three); the k-th request of a route: user PREFIX-<route>-u<k % 1000>,
--     timestamp BASE + k ms, device_a or device_b by k // 1000 (so each user gets a
--     reading a second, as in bench_post.lua)
--   wrk ... -s ops/soak.lua http://127.0.0.1:PORT -- batch PREFIX
--     cycles the three batch routes and /readings, 1,000 records a request: users
--     PREFIX-<route>-u0 .. u99, 10 seconds each; the k-th request of a route covers the
--     seconds [10k, 10k + 10) from BASE (a gateway uploading 100 users at 1 Hz)
-- Prints one BENCH_RESULT line, as bench_post.lua does.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

local BASE_S = 1704067200 -- 2024-01-01T00:00:00Z
local ROUTES = { "hr", "steps", "calories", "readings" }
local SINGLE = { "/metrics/heart-rate", "/metrics/steps", "/metrics/calories", "/readings" }
local BATCH = {
  "/metrics/heart-rate/batch", "/metrics/steps/batch", "/metrics/calories/batch", "/readings"
}
local USERS, SECONDS = 100, 10 -- a batch: USERS x SECONDS records

local mode
local prefix
local n = 0
local templates = {} -- [route][window]: a batch body with "@M@" for its minute

local function values(route, a)
  local hr = string.format('"heart_rate":%d', 50 + (a * 7) % 100)
  local steps = string.format('"steps":%d', a % 120)
  local calories = string.format('"calories":%.1f', (a % 50) / 10)
  if route == 1 then return hr elseif route == 2 then return steps
  elseif route == 3 then return calories end
  return hr .. "," .. steps .. "," .. calories
end

local function record(route, user, device, stamp, a)
  return string.format(
    '{"user_id":"%s-%s-u%d","device_id":"%s","timestamp":"%s",%s}',
    prefix, ROUTES[route], user, device, stamp, values(route, a))
end

local function template(route, window)
  local items = {}
  for i = 0, USERS - 1 do
    for s = 0, SECONDS - 1 do
      local second = window * SECONDS + s
      local device = (i % 3 == 0) and "device_b" or "device_a"
      local stamp = string.format("@M@:%02d.000Z", second)
      items[#items + 1] = record(route, i, device, stamp, i + second)
    end
  end
  local list = "[" .. table.concat(items, ",") .. "]"
  return route == 4 and list or ('{"readings":' .. list .. "}")
end

function init(args)
  mode = args[1]
  prefix = args[2] .. "-t" .. tostring(tid)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "batch" then
    for route = 1, #ROUTES do
      templates[route] = {}
      for window = 0, 60 / SECONDS - 1 do
        templates[route][window] = template(route, window)
      end
    end
  elseif mode ~= "single" then
    error("mode must be 'single' or 'batch', not " .. tostring(mode))
  end
end

function request()
  local route = n % #ROUTES + 1
  local k = math.floor(n / #ROUTES)
  n = n + 1
  if mode == "batch" then
    local windows = 60 / SECONDS
    local minute = os.date("!%Y-%m-%dT%H:%M", BASE_S + 60 * math.floor(k / windows))
    local body = templates[route][k % windows]:gsub("@M@", minute)
    return wrk.format(nil, BATCH[route], nil, body)
  end
  local seconds = BASE_S + math.floor(k / 1000)
  local stamp = string.format("%s.%03dZ", os.date("!%Y-%m-%dT%H:%M:%S", seconds), k % 1000)
  local device = (math.floor(k / 1000) % 2 == 0) and "device_a" or "device_b"
  local body = record(route, k % 1000, device, stamp, k)
  return wrk.format(nil, SINGLE[route], nil, route == 4 and ("[" .. body .. "]") or body)
end

dofile("ops/bench_result.lua") -- done(): the BENCH_RESULT line (wrk runs from the repo root)
