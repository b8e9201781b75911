-- wrk script: one seed-paged user per connection. Each connection waits
-- 1-3 s (uniform) after each answer before its next request: the think
-- time of orders-loadtest's `seed-paged` scenario (and the seed's Locust
-- users). The requests are GET /orders?limit=100 and POST /orders (the
-- seed's order body), half each: wrk's request() knows its thread, not its
-- connection, so the thread's requests alternate (one connection's need
-- not). Used by bench/one_core_wrk.sh.
local order = '{"product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}'
local sent = 0

function init(args)
  math.randomseed(os.time() * 1000 + (tonumber(args[1]) or 0))
end

function request()
  sent = sent + 1
  if sent % 2 == 1 then
    return wrk.format("GET", "/orders?limit=100")
  end
  return wrk.format("POST", "/orders", { ["Content-Type"] = "application/json" }, order)
end

function delay()
  return math.random(1000, 3000)
end
