-- POST /cph/heartbeat from BENCH_PHONES distinct phones (default 100000), each thread
-- walking its own stride of ids; every 4th heartbeat names a running session, as while a
-- game runs. The same body shape is sent to the ceiling.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local phones = tonumber(os.getenv("BENCH_PHONES") or "100000")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")
local n = 0

function request()
  local i = (n * nthreads + id) % phones
  n = n + 1
  local session, app = "", ""
  if i % 4 == 0 then session, app = string.format("hb-s-%07d", i), "bench.game" end
  local body = string.format(
    '{"event_type":"heartbeat","event":{"phone_id":"bench-p-%07d","time":"%s",' ..
    '"app_id":"%s","session_id":"%s"}}', i, os.date("!%Y-%m-%dT%H:%M:%SZ"), app, session)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
