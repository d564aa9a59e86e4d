-- wrk script: PUT 1 KiB values to random keys of the demo table.
-- Usage: wrk -t2 -c32 -d10s -s bench/put.lua http://127.0.0.1:7000
local value = string.rep("x", 1024)
math.randomseed(42)
request = function()
  local key = "bench" .. math.random(1, 100000)
  return wrk.format("PUT", "/v1/tables/demo/items/" .. key, nil, value)
end
