-- POST /cph/sign-check, replaying bodies bench_prep wrote (one minted session each, to
-- BENCH_SIGN_BODIES). Threads take disjoint lines, so each ticket is presented once: the
-- accepted, ticket-consuming path, decryption included. A thread stops when its lines are
-- used up, so the run lasts at most --duration and the rate is of first uses only
-- (bench/run also counts them from cphub's own metrics).
dofile(os.getenv("BENCH_DIR") .. "/report.lua")

local bodies, sent, answered = {}, 0, 0
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "2")

function init(args)
  local i = 0
  for line in io.lines(os.getenv("BENCH_SIGN_BODIES")) do
    if i % nthreads == id then table.insert(bodies, line) end
    i = i + 1
  end
end

function request()
  sent = sent + 1
  -- Past the end (connections still open) the last body repeats: an identical retry.
  local body = bodies[math.min(sent, #bodies)]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= #bodies then wrk.thread:stop() end
end
