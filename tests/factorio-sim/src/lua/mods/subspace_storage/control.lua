-- A stand-in for the Subspace Storage mod, written for factorio-sim (research/plugins.md §2.6,
-- §5.1 item 10). Same mod name, IPC channels and host entry points; the injectors and
-- extractors are counters driven by the sim's `/standin subspace put|request` verbs.
--
-- Host → mod (run with `/sc __subspace_storage__ …`): Import(json), UpdateInvData(json, full),
-- global.ticksSinceMasterPinged = 0. Mod → host: `subspace_storage:output` (items taken from
-- injectors) at cycle tick 60 and `subspace_storage:orders` (what extractors miss) at tick 61,
-- through the clusterio_api remote interface (nothing is sent when it is missing).

local CYCLE = 62
local TICKS_TO_COLLECT = 40
local EXPORT_TICK = 60
local ORDERS_TICK = 61
local PING_TIMEOUT = 300

local function to_json(t)
  if helpers then
    return helpers.table_to_json(t)
  end
  return game.table_to_json(t)
end

local function from_json(s)
  if helpers then
    return helpers.json_to_table(s)
  end
  return game.json_to_table(s)
end

local function escape(channel)
  return (channel:gsub("[%c?\\]", function(c)
    return string.format("\\x%02x", c:byte())
  end))
end

local function send_json(channel, data)
  local api = remote.interfaces["clusterio_api"]
  if not api then
    return
  end
  local text = to_json(data)
  if #text < 4000 then
    print("\f$ipc:" .. escape(channel) .. "?j" .. text)
  else
    local n = remote.call("clusterio_api", "get_file_no")
    local name = "clst_" .. n .. ".json"
    if helpers then
      helpers.write_file(name, text, false, 0)
    else
      game.write_file(name, text, false, 0)
    end
    print("\f$ipc:" .. escape(channel) .. "?f" .. name)
  end
end

local function key(name, quality)
  return name .. ":" .. (quality or "normal")
end

local function setup()
  if storage then
    global = storage
  end
end

local function init()
  setup()
  global.itemStorage = global.itemStorage or {}
  global.invdata = global.invdata or {}
  global.injected = global.injected or {}
  global.requests = global.requests or {}
  global.extracted = global.extracted or {}
  global.cycle = global.cycle or 0
  global.ticksSinceMasterPinged = global.ticksSinceMasterPinged or (PING_TIMEOUT + 1)
end

script.on_init(init)
script.on_load(setup)
script.on_configuration_changed(init)

local function add(list, name, count, quality)
  local k = key(name, quality)
  local e = list[k]
  if e then
    e[2] = e[2] + count
  else
    list[k] = { name, count, quality or "normal" }
  end
end

local function as_list(map)
  local out = {}
  local keys = {}
  for k in pairs(map) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local e = map[k]
    if e[2] > 0 then
      out[#out + 1] = { e[1], e[2], e[3] }
    end
  end
  return out
end

-- Extractors take what local storage has, up to their request.
local function fulfil()
  for k, r in pairs(global.requests) do
    local have = global.extracted[k] or 0
    local want = r[2] - have
    local stored = global.itemStorage[k]
    if want > 0 and stored and stored[2] > 0 then
      local n = math.min(want, stored[2])
      stored[2] = stored[2] - n
      global.extracted[k] = have + n
    end
  end
end

local function orders()
  local out = {}
  for k, r in pairs(global.requests) do
    local missing = r[2] - (global.extracted[k] or 0)
    if missing > 0 then
      out[#out + 1] = { r[1], missing, r[3] }
    end
  end
  table.sort(out, function(a, b) return key(a[1], a[3]) < key(b[1], b[3]) end)
  return out
end

local function send_orders()
  local out = orders()
  if #out > 0 then
    send_json("subspace_storage:orders", out)
  end
end

script.on_event(defines.events.on_tick, function()
  global.ticksSinceMasterPinged = global.ticksSinceMasterPinged + 1
  if global.ticksSinceMasterPinged >= PING_TIMEOUT then
    return
  end
  global.cycle = global.cycle + 1
  if global.cycle > TICKS_TO_COLLECT and global.cycle < EXPORT_TICK then
    fulfil()
  elseif global.cycle == EXPORT_TICK then
    local out = as_list(global.injected)
    global.injected = {}
    if #out > 0 then
      send_json("subspace_storage:output", out)
    end
  elseif global.cycle == ORDERS_TICK then
    send_orders()
  end
  if global.cycle >= CYCLE then
    global.cycle = 0
  end
end)

-- Host entry points (globals of this mod's state).
function Import(json)
  for _, item in ipairs(from_json(json) or {}) do
    add(global.itemStorage, item[1], item[2], item[3])
  end
end

function UpdateInvData(json, full)
  if full then
    global.invdata = {}
  end
  for _, item in ipairs(from_json(json) or {}) do
    global.invdata[key(item[1], item[3])] = { item[1], item[2], item[3] or "normal" }
  end
end

remote.add_interface("clusterio", {
  printStorage = function()
    for _, e in ipairs(as_list(global.itemStorage)) do
      game.print(e[1] .. " " .. e[2] .. " " .. e[3])
    end
  end,
  reset = function()
    global.itemStorage = {}
  end,
})

-- Sim-only: what the `/standin subspace …` verbs call.
standin_subspace = {
  put = function(name, count, quality)
    add(global.injected, name, count, quality)
    -- Everything ever put into this game (in its state: a rollback takes back what came after
    -- its save, like any other change).
    global.put_total = global.put_total or {}
    add(global.put_total, name, count, quality)
  end,
  request = function(name, count, quality)
    global.requests[key(name, quality)] = { name, count, quality or "normal" }
    global.extracted[key(name, quality)] = 0
  end,
  -- Every item this game holds, by "name:quality": in injectors (not yet exported), in local
  -- storage (imported, not yet handed out) and in extractors; and `put`, all ever put in.
  count = function()
    local out = {}
    local function sum(list, field)
      for k, e in pairs(list) do
        local n = type(e) == "table" and e[2] or e
        if n > 0 then
          out[k] = out[k] or { injected = 0, stored = 0, extracted = 0 }
          out[k][field] = out[k][field] + n
        end
      end
    end
    sum(global.injected, "injected")
    sum(global.itemStorage, "stored")
    sum(global.extracted, "extracted")
    for k, e in pairs(global.put_total or {}) do
      out[k] = out[k] or { injected = 0, stored = 0, extracted = 0 }
      out[k].put = e[2]
    end
    return to_json(out)
  end,
  -- The orders, now (outside the cycle).
  orders = send_orders,
}
