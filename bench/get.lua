-- wrk script: GET random keys of the demo table (run put.lua first).
math.randomseed(7)
request = function()
  local key = "bench" .. math.random(1, 100000)
  return wrk.format("GET", "/v1/tables/demo/items/" .. key)
end
