-- event_handler for factorio-sim, written for the sim against the documented contract of
-- Factorio's lualib module: libraries are tables with optional on_init, on_load,
-- on_configuration_changed, events, on_nth_tick, add_remote_interface and add_commands.
local handler = {}
local libs = {}

local function fan_out(list)
  if #list == 1 then
    return list[1]
  end
  return function(event)
    for _, f in ipairs(list) do
      f(event)
    end
  end
end

local function register()
  local by_event, by_event_order = {}, {}
  local by_tick, by_tick_order = {}, {}
  for _, lib in ipairs(libs) do
    for id, f in pairs(lib.events or {}) do
      if not by_event[id] then
        by_event[id] = {}
        by_event_order[#by_event_order + 1] = id
      end
      table.insert(by_event[id], f)
    end
    for n, f in pairs(lib.on_nth_tick or {}) do
      if not by_tick[n] then
        by_tick[n] = {}
        by_tick_order[#by_tick_order + 1] = n
      end
      table.insert(by_tick[n], f)
    end
  end
  for _, id in ipairs(by_event_order) do
    script.on_event(id, fan_out(by_event[id]))
  end
  for _, n in ipairs(by_tick_order) do
    script.on_nth_tick(n, fan_out(by_tick[n]))
  end
end

local function each(name, ...)
  for _, lib in ipairs(libs) do
    local f = lib[name]
    if f then
      f(...)
    end
  end
end

local interfaces_added = false
local function setup()
  if not interfaces_added then
    interfaces_added = true
    each("add_remote_interface")
    each("add_commands")
  end
  register()
end

script.on_init(function()
  setup()
  each("on_init")
end)

script.on_load(function()
  setup()
  each("on_load")
end)

script.on_configuration_changed(function(data)
  each("on_configuration_changed", data)
end)

function handler.add_lib(lib)
  if type(lib) ~= "table" then
    error("Library must be a table, got " .. type(lib), 2)
  end
  for _, l in ipairs(libs) do
    if l == lib then
      error("Trying to register same lib twice", 2)
    end
  end
  libs[#libs + 1] = lib
end

function handler.add_libraries(list)
  for _, lib in ipairs(list) do
    handler.add_lib(lib)
  end
end

return handler
