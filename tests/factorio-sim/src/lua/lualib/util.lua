-- A small util library for the sim (only the commonly used helpers).
local util = { table = {} }

function util.table.deepcopy(t)
  local seen = {}
  local function copy(v)
    if type(v) ~= "table" then
      return v
    end
    if seen[v] then
      return seen[v]
    end
    local out = {}
    seen[v] = out
    for k, x in pairs(v) do
      out[copy(k)] = copy(x)
    end
    return setmetatable(out, getmetatable(v))
  end
  return copy(t)
end
util.copy = util.table.deepcopy

function util.table.compare(a, b)
  if a == b then
    return true
  end
  if type(a) ~= "table" or type(b) ~= "table" then
    return false
  end
  for k, v in pairs(a) do
    if not util.table.compare(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

function util.merge(tables)
  local out = {}
  for _, t in ipairs(tables) do
    for k, v in pairs(t) do
      if type(v) == "table" and type(out[k]) == "table" then
        out[k] = util.merge({ out[k], v })
      else
        out[k] = util.table.deepcopy(v)
      end
    end
  end
  return out
end

function util.distance(a, b)
  local ax, ay = a.x or a[1], a.y or a[2]
  local bx, by = b.x or b[1], b.y or b[2]
  return math.sqrt((ax - bx) ^ 2 + (ay - by) ^ 2)
end

function util.format_number(n)
  local s = tostring(math.floor(n))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

return util
