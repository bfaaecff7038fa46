-- wrk script for bench/hop.sh: one Authorization header per request, rotating
-- round-robin over the tokens of a file (one JWT per line).
--
--   wrk ... -s bench/rotate_tokens.lua URL -- TOKENS_FILE [OFFSET] [THREADS]
--
-- Thread t of THREADS sends tokens OFFSET+t, OFFSET+t+THREADS, ... (modulo the number of
-- tokens), so threads never send the same token at the same time, and a harness that
-- passes OFFSET = requests already sent can make every token of a large file be used
-- once before any repeats ("a distinct token per request"). The requests are built once
-- in init(), so the per-request cost on the load generator is a table lookup.

local thread_count = 0

function setup(thread)
  thread:set("id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  local file = args[1]
  local offset = tonumber(args[2] or "0")
  local threads = tonumber(args[3] or "1")
  local tokens = {}
  for line in io.lines(file) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  local n = #tokens
  if n == 0 then error("no tokens in " .. file) end
  requests = {}
  local i = (offset + id) % n
  -- This thread's share, in the order it sends them.
  local share = math.max(1, math.floor(n / threads))
  for k = 1, share do
    requests[k] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[i + 1] })
    i = (i + threads) % n
  end
  tokens = nil
  count = #requests
  next_index = 1
end

function request()
  local r = requests[next_index]
  next_index = next_index + 1
  if next_index > count then next_index = 1 end
  return r
end
