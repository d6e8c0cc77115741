-- POST /cph/events: each connection plays whole sessions, enter then quit, every session
-- new (a distinct session_id per thread and counter), on phones spread over 100k ids. So
-- every request is a first delivery that changes the book: the accepted path, committed
-- before the 200.
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local run = os.getenv("BENCH_RUN") or "r"
local n = 0

function request()
  local s = math.floor(n / 2)
  local status = n % 2
  n = n + 1
  local tail = ""
  if status == 1 then tail = ',"run_time":30' end
  local body = string.format(
    '{"event_type":"app","event":{"status":%d,"phone_id":"bench-p-%07d","app_id":"bench.game",' ..
    '"session_id":"ev-%s-%d-%d","time":"%s"%s}}',
    status, (s * 7919 + id) % 100000, run, id, s, os.date("!%Y-%m-%dT%H:%M:%SZ"), tail)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
