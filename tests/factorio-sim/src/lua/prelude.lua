-- factorio-sim: the Factorio runtime surface for the level script (research/plugins.md §5.3).
-- Written for the sim; Rust passes its primitives in `sim` and keeps the returned `api`.
local sim = ...
local is_1_1 = sim.is_1_1
local owner = sim.owner           -- "level", or the mod's name
local crash_prefix = sim.crash_prefix
local raw_load, raw_error, raw_type, raw_pairs = load, error, type, pairs
local traceback = debug.traceback

-- Factorio's sandbox: no io, os, loadfile, dofile, package.loadlib, string.dump, bytecode.
io, os, loadfile, dofile, loadstring, module = nil, nil, nil, nil, nil, nil
string.dump = nil
math.randomseed(0)
math.randomseed = nil
load = function(chunk, chunkname, _mode, env)
  if env == nil then
    return raw_load(chunk, chunkname, "t")
  end
  return raw_load(chunk, chunkname, "t", env)
end

local api = {}
local tick = 0
local handlers = {}      -- event id -> function
local nth = {}           -- n -> function
local nth_order = {}     -- sorted n
local on_init_f, on_load_f, on_config_f
local parsing = true     -- true while control.lua's main chunk runs
local rcon_active = false

-- print: a raw stdout line (how `\f$ipc:` lines leave the game).
print = function(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do
    parts[i] = tostring((select(i, ...)))
  end
  sim.print(table.concat(parts, "\t"))
end

local function where(level)
  local info = debug.getinfo(level, "Sl")
  if not info then
    return "=(command):1"
  end
  local src = info.source or "?"
  if src:sub(1, 1) ~= "@" then
    src = "=(command)"
  end
  return src .. ":" .. tostring(info.currentline or 0)
end

local function text_of(v)
  if raw_type(v) == "table" then
    -- a localised string: its key, then its parameters
    local parts = {}
    for i, p in ipairs(v) do
      parts[i] = text_of(p)
    end
    return table.concat(parts, " ")
  end
  return tostring(v)
end

log = function(msg)
  sim.log(where(3), text_of(msg))
end

localised_print = function(msg)
  sim.print(text_of(msg))
end

table_size = function(t)
  local n = 0
  for _ in raw_pairs(t) do
    n = n + 1
  end
  return n
end

-- defines -------------------------------------------------------------------------------------
local event_names = {
  "on_tick", "on_gui_click", "on_gui_text_changed", "on_gui_checked_state_changed",
  "on_entity_died", "on_picked_up_item", "on_built_entity", "on_sector_scanned",
  "on_player_mined_item", "on_put_item", "on_rocket_launched", "on_pre_player_mined_item",
  "on_chunk_generated", "on_player_crafted_item", "on_robot_built_entity",
  "on_robot_pre_mined", "on_robot_mined", "on_research_started", "on_research_finished",
  "on_player_rotated_entity", "on_marked_for_deconstruction", "on_cancelled_deconstruction",
  "on_trigger_created_entity", "on_train_changed_state", "on_player_created",
  "on_resource_depleted", "on_player_driving_changed_state", "on_force_created",
  "on_forces_merging", "on_player_cursor_stack_changed", "on_pre_entity_settings_pasted",
  "on_entity_settings_pasted", "on_player_main_inventory_changed", "on_player_armor_inventory_changed",
  "on_player_ammo_inventory_changed", "on_player_gun_inventory_changed", "on_player_placed_equipment",
  "on_player_removed_equipment", "on_pre_player_died", "on_player_died", "on_player_respawned",
  "on_player_joined_game", "on_player_left_game", "on_player_built_tile", "on_player_mined_tile",
  "on_robot_built_tile", "on_robot_mined_tile", "on_player_selected_area", "on_player_alt_selected_area",
  "on_player_changed_surface", "on_selected_entity_changed", "on_market_item_purchased",
  "on_player_dropped_item", "on_biter_base_built", "on_player_changed_force", "on_entity_damaged",
  "on_player_cancelled_crafting", "on_pre_player_crafted_item", "on_player_promoted",
  "on_player_demoted", "on_combat_robot_expired", "on_player_changed_position",
  "on_mod_item_opened", "on_gui_opened", "on_gui_closed", "on_gui_value_changed",
  "on_player_muted", "on_player_unmuted", "on_player_cheat_mode_enabled",
  "on_player_cheat_mode_disabled", "on_character_corpse_expired", "on_pre_ghost_deconstructed",
  "on_player_pipette", "on_player_display_resolution_changed", "on_player_display_scale_changed",
  "on_pre_player_crafted_item", "on_player_kicked", "on_player_banned", "on_player_unbanned",
  "on_pre_player_left_game", "on_pre_player_removed", "on_player_removed", "on_console_chat",
  "on_console_command", "on_gui_selection_state_changed", "on_gui_elem_changed",
  "on_gui_confirmed", "on_gui_location_changed", "on_gui_selected_tab_changed",
  "on_gui_switch_state_changed", "on_research_reversed", "on_research_cancelled",
  "on_research_queued", "on_technology_effects_reset", "on_surface_created", "on_surface_deleted",
  "on_pre_surface_deleted", "on_player_toggled_map_editor", "on_player_configured_blueprint",
  "on_cutscene_cancelled", "on_cutscene_finished", "on_string_translated", "on_player_locale_changed",
  "on_udp_packet_received", "on_space_platform_changed_state", "on_runtime_mod_setting_changed",
  "on_player_input_method_changed", "script_raised_built", "script_raised_destroy",
  "script_raised_revive", "script_raised_teleported", "script_raised_set_tiles",
}
local events, event_name_of, next_event = {}, {}, 0
for _, name in ipairs(event_names) do
  if events[name] == nil then
    events[name] = next_event
    event_name_of[next_event] = name
    next_event = next_event + 1
  end
end
setmetatable(events, {
  __index = function(t, k)
    if raw_type(k) ~= "string" or not k:match("^on_") and not k:match("^script_raised_") then
      return nil
    end
    local id = next_event
    next_event = next_event + 1
    rawset(t, k, id)
    event_name_of[id] = k
    return id
  end,
})

local function enum(names, first)
  local t = {}
  for i, n in ipairs(names) do
    t[n] = (first or 0) + i - 1
  end
  return t
end

local function open_enum()
  local n = 0
  return setmetatable({}, {
    __index = function(t, k)
      n = n + 1
      rawset(t, k, n)
      return n
    end,
  })
end

defines = setmetatable({
  events = events,
  disconnect_reason = {
    quit = 0, dropped = 1, reconnect = 2, wrong_input = 3, desync_limit_reached = 4,
    cannot_keep_up = 5, afk = 6, kicked = 7, kicked_and_deleted = 8, banned = 9,
    switching_servers = 11,
  },
  controllers = enum({ "ghost", "character", "god", "editor", "cutscene", "spectator", "remote" }),
  -- Fixed ids for the inventories the player model has; others are handed out on demand.
  inventory = (function()
    local n = 100
    return setmetatable({
      character_main = 1, god_main = 1, character_guns = 3, character_ammo = 4,
      character_armor = 5, character_vehicle = 7, character_trash = 8, chest = 1,
    }, {
      __index = function(t, k)
        n = n + 1
        rawset(t, k, n)
        return n
      end,
    })
  end)(),
  print_sound = enum({ "always", "never", "use_player_settings" }),
  print_skip = enum({ "never", "if_redundant", "if_visible" }),
}, {
  __index = function(t, k)
    local e = open_enum()
    rawset(t, k, e)
    return e
  end,
})

-- script --------------------------------------------------------------------------------------
local generated = 0
local function event_id(e)
  if raw_type(e) == "number" then
    return e
  end
  if raw_type(e) == "string" then
    return e
  end
  raw_error("Invalid event id", 3)
end

local function sort_nth()
  nth_order = {}
  for n in raw_pairs(nth) do
    nth_order[#nth_order + 1] = n
  end
  table.sort(nth_order)
end

local active_mods = sim.active_mods
script = {
  mod_name = owner,
  level = { level_name = "freeplay", campaign_name = nil, is_simulation = false, is_tutorial = false },
  active_mods = active_mods,
  on_init = function(f)
    on_init_f = f
  end,
  on_load = function(f)
    on_load_f = f
  end,
  on_configuration_changed = function(f)
    on_config_f = f
  end,
  on_event = function(e, f, _filters)
    if raw_type(e) == "table" then
      for _, x in ipairs(e) do
        handlers[event_id(x)] = f
      end
    else
      handlers[event_id(e)] = f
    end
  end,
  on_nth_tick = function(n, f)
    if n == nil then
      nth = {}
    elseif raw_type(n) == "table" then
      for _, x in ipairs(n) do
        nth[x] = f
      end
    else
      if raw_type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
        raw_error("Invalid nth tick: " .. tostring(n), 2)
      end
      nth[n] = f
    end
    sort_nth()
  end,
  get_event_handler = function(e)
    return handlers[e]
  end,
  generate_event_name = function()
    generated = generated + 1
    local id = next_event
    next_event = next_event + 1
    event_name_of[id] = "custom-event-" .. generated
    return id
  end,
  raise_event = function(e, data)
    local f = handlers[e]
    if f then
      local ev = {}
      for k, v in raw_pairs(data or {}) do
        ev[k] = v
      end
      ev.name, ev.tick = e, tick
      f(ev)
    end
  end,
  register_on_object_destroyed = function()
    return 0
  end,
  register_metatable = function() end,
}
if is_1_1 then
  script.register_on_entity_destroyed = script.register_on_object_destroyed
end

-- game objects --------------------------------------------------------------------------------
local function object(kind, key, fields)
  return setmetatable(fields, { __sim_object = kind .. ":" .. tostring(key) })
end

local players = {}          -- index -> player object
local by_name = {}          -- name -> player object
local player_list = setmetatable({}, {
  __index = function(_, k)
    if raw_type(k) == "string" then
      return by_name[k]
    end
    return players[k]
  end,
  __len = function()
    return #players
  end,
  __pairs = function()
    return next, players, nil
  end,
  __ipairs = function()
    return ipairs(players)
  end,
  __newindex = function()
    raw_error("LuaCustomTable is read-only", 2)
  end,
})

local forces = {}
local techs = {}
local function tech_list()
  return setmetatable({}, {
    __index = function(_, k)
      return techs[k]
    end,
    __pairs = function()
      return next, techs, nil
    end,
    __len = function()
      return table_size(techs)
    end,
    __newindex = function()
      raw_error("LuaCustomTable is read-only", 2)
    end,
  })
end

local function no_op() end
-- Flow statistics ({input_counts, output_counts}) per owner and surface. The sim hands out the
-- live tables, so a test sets counts with `/sc …get_item_production_statistics(1).input_counts[…] = n`.
local flows = {}
local function flow_statistics(key, surface)
  local s = raw_type(surface) == "table" and surface.index or surface or 1
  key = key .. "@" .. tostring(s)
  flows[key] = flows[key] or { input_counts = {}, output_counts = {} }
  return flows[key]
end
local function make_force(name, index)
  local f = object("force", name, {
    name = name,
    index = index,
    valid = true,
    research_progress = 0,
    current_research = nil,
    print = no_op,
    play_sound = no_op,
    players = {},
    connected_players = {},
  })
  if name == "player" then
    f.technologies = tech_list()
    f.add_research = function(t)
      if raw_type(t) == "string" then
        t = techs[t]
      end
      if t and not t.researched then
        f.current_research = t
        return true
      end
      return false
    end
    f.cancel_current_research = function()
      f.current_research = nil
    end
    f.get_saved_technology_progress = function(t)
      if raw_type(t) == "string" then
        t = techs[t]
      end
      return t and t.saved_progress or nil
    end
    f.set_saved_technology_progress = function(t, p)
      if raw_type(t) == "string" then
        t = techs[t]
      end
      if t then
        t.saved_progress = p
      end
    end
  end
  for _, kind in ipairs({ "item_production", "fluid_production", "kill_count", "entity_build_count" }) do
    f["get_" .. kind .. "_statistics"] = function(surface)
      return flow_statistics(name .. "/" .. kind, surface)
    end
  end
  forces[name] = f
  return f
end
make_force("player", 1)
make_force("enemy", 2)
make_force("neutral", 3)

-- Technologies are proxies: setting `researched = true` from a script finishes the research and
-- raises on_research_finished (by_script), as the game does.
local tech_data = {}
local dispatch
local function new_tech(name, max_level, level)
  local d = {
    name = name,
    valid = true,
    enabled = true,
    visible_when_disabled = false,
    researched = false,
    level = level or 1,
    saved_progress = 0,
    force = forces.player,
    prototype = { name = name, max_level = max_level or 1, level = level or 1, valid = true },
    upgrade = (max_level or 1) > 1,
    research_unit_count = 10,
  }
  local t
  t = setmetatable({}, {
    __sim_object = "technology:" .. name,
    __index = d,
    __newindex = function(_, k, v)
      if k == "researched" then
        if v and not d.researched then
          d.researched, d.saved_progress = true, 0
          local f = forces.player
          if f.current_research == t then
            f.current_research, f.research_progress = nil, 0
          end
          local ok, err = dispatch(events.on_research_finished, { research = t, by_script = true })
          if not ok then
            raw_error(err, 2)
          end
        else
          d.researched = v and true or false
        end
      elseif k == "level" or k == "saved_progress" or k == "enabled" or k == "visible_when_disabled" then
        d[k] = v
      else
        raw_error("LuaTechnology doesn't contain key " .. tostring(k) .. ".", 2)
      end
    end,
  })
  techs[name] = t
  tech_data[name] = d
  return t
end
for _, n in ipairs({
  "automation", "automation-2", "automation-3", "logistics", "logistics-2", "logistics-3",
  "electronics", "advanced-circuit", "steel-processing", "oil-processing", "plastics",
  "sulfur-processing", "battery", "electric-energy-distribution-1", "fast-inserter",
  "military", "military-2", "turrets", "stone-wall", "optics", "engine", "railway",
  "automobilism", "rocket-silo", "space-science-pack", "logistic-science-pack",
  "chemical-science-pack", "production-science-pack", "utility-science-pack",
  "toolbelt", "steel-axe", "construction-robotics", "logistic-robotics", "robotics",
}) do
  new_tech(n, 1, 1)
end
new_tech("mining-productivity-1", 1, 1)
new_tech("mining-productivity-3", 4294967295, 3)
new_tech("worker-robots-speed-6", 4294967295, 6)
new_tech("follower-robot-count-5", 4294967295, 5)
new_tech("physical-projectile-damage-7", 4294967295, 7)

local surfaces = { nauvis = object("surface", "nauvis", { name = "nauvis", index = 1, valid = true }) }
surfaces[1] = surfaces.nauvis

-- Players, characters and inventories (LuaPlayer / LuaEntity "character" / LuaInventory /
-- LuaItemStack), as far as inventory_sync and the sim's `give`/`inventory` verbs need them.
-- Stacks are `{name, count, quality}`; an inventory is a fixed number of slots.
local stack_sizes = {
  ["light-armor"] = 1, ["heavy-armor"] = 1, ["modular-armor"] = 1, ["power-armor"] = 1,
  ["power-armor-mk2"] = 1, ["mech-armor"] = 1, pistol = 5, ["submachine-gun"] = 5, shotgun = 5,
  ["combat-shotgun"] = 5, ["rocket-launcher"] = 5, blueprint = 1, ["blueprint-book"] = 1,
  ["firearm-magazine"] = 200, ["piercing-rounds-magazine"] = 200, ["electronic-circuit"] = 200,
  ["copper-cable"] = 200, ["solar-panel"] = 50, ["steel-chest"] = 50, ["assembling-machine-1"] = 50,
}
local function stack_size(name)
  return stack_sizes[name] or 100
end
-- Character inventories: defines.inventory id -> {key, slots}.
local character_inventories = {
  [1] = { key = "main", size = 80 },
  [3] = { key = "guns", size = 3 },
  [4] = { key = "ammo", size = 3 },
  [5] = { key = "armor", size = 1 },
  [8] = { key = "trash", size = 20 },
}
local inventory_order = { 1, 3, 4, 5, 8 }

local function stack_spec(spec, what)
  if raw_type(spec) == "string" then
    return spec, 1, "normal"
  end
  if raw_type(spec) ~= "table" or raw_type(spec.name) ~= "string" then
    raw_error("Invalid " .. what .. ": expected an item name or {name=…, count=…}", 3)
  end
  local q = spec.quality
  if raw_type(q) == "table" then
    q = q.name
  end
  local count = spec.count or 1
  if raw_type(count) ~= "number" or count < 0 then
    raw_error("Invalid " .. what .. ": count must be a non-negative number", 3)
  end
  return spec.name, math.floor(count), q or "normal"
end

local function quality_of(name)
  return { name = name, valid = true, object_name = "LuaQualityPrototype" }
end

local function item_prototype(name)
  return { name = name, valid = true, stack_size = stack_size(name), object_name = "LuaItemPrototype" }
end

local new_inventory
do
  local function item_stack(inv, slots, i)
    return setmetatable({}, {
      __index = function(_, k)
        local s = slots[i]
        if k == "valid" then
          return true
        elseif k == "valid_for_read" then
          return s ~= nil
        elseif k == "object_name" then
          return "LuaItemStack"
        elseif k == "clear" then
          return function()
            slots[i] = nil
          end
        elseif k == "set_stack" then
          return function(spec)
            if spec == nil then
              slots[i] = nil
              return true
            end
            local n, c, q = stack_spec(spec, "stack")
            if c == 0 then
              slots[i] = nil
            else
              slots[i] = { name = n, count = math.min(c, stack_size(n)), quality = q }
            end
            return true
          end
        end
        if s == nil then
          raw_error("Operation on invalid stack: the stack is empty (valid_for_read is false)", 2)
        end
        if k == "name" then
          return s.name
        elseif k == "count" then
          return s.count
        elseif k == "quality" then
          return quality_of(s.quality)
        elseif k == "prototype" then
          return item_prototype(s.name)
        end
        return nil
      end,
      __newindex = function(_, k, v)
        if k == "count" and slots[i] ~= nil and raw_type(v) == "number" then
          if v <= 0 then
            slots[i] = nil
          else
            slots[i].count = math.min(math.floor(v), stack_size(slots[i].name))
          end
        else
          raw_error("LuaItemStack doesn't contain key " .. tostring(k) .. ".", 2)
        end
      end,
    })
  end

  -- `slots` is the live slot table (index -> stack or nil), so the owner can persist it.
  function new_inventory(index, size, slots)
    local inv = {}
    local function matches(s, name, quality)
      return s ~= nil and s.name == name and (quality == nil or s.quality == quality)
    end
    local function count_of(name, quality)
      local n = 0
      for i = 1, size do
        local s = slots[i]
        if s and (name == nil or matches(s, name, quality)) then
          n = n + s.count
        end
      end
      return n
    end
    local methods = {
      valid = true,
      index = index,
      object_name = "LuaInventory",
      get_item_count = function(spec)
        if spec == nil then
          return count_of(nil)
        end
        local n, _, q = stack_spec(spec, "item")
        return count_of(n, raw_type(spec) == "table" and spec.quality and q or nil)
      end,
      get_contents = function()
        local by, out = {}, {}
        for i = 1, size do
          local s = slots[i]
          if s then
            local key = s.name .. "\0" .. s.quality
            if by[key] then
              by[key].count = by[key].count + s.count
            else
              by[key] = { name = s.name, count = s.count, quality = s.quality }
              out[#out + 1] = by[key]
            end
          end
        end
        return out
      end,
      is_empty = function()
        return next(slots) == nil
      end,
      clear = function()
        for i = 1, size do
          slots[i] = nil
        end
      end,
      get_insertable_count = function(spec)
        local n, _, q = stack_spec(spec, "item")
        local room = 0
        for i = 1, size do
          local s = slots[i]
          if s == nil then
            room = room + stack_size(n)
          elseif matches(s, n, q) then
            room = room + stack_size(n) - s.count
          end
        end
        return room
      end,
      insert = function(spec)
        local n, c, q = stack_spec(spec, "item")
        local left = c
        for i = 1, size do
          local s = slots[i]
          if left > 0 and matches(s, n, q) and s.count < stack_size(n) then
            local add = math.min(left, stack_size(n) - s.count)
            s.count, left = s.count + add, left - add
          end
        end
        for i = 1, size do
          if left > 0 and slots[i] == nil then
            local add = math.min(left, stack_size(n))
            slots[i], left = { name = n, count = add, quality = q }, left - add
          end
        end
        return c - left
      end,
      remove = function(spec)
        local n, c, q = stack_spec(spec, "item")
        local want = c
        for i = size, 1, -1 do
          local s = slots[i]
          if want > 0 and matches(s, n, q) then
            local take = math.min(want, s.count)
            s.count, want = s.count - take, want - take
            if s.count == 0 then
              slots[i] = nil
            end
          end
        end
        return c - want
      end,
    }
    methods.can_insert = function(spec)
      return methods.get_insertable_count(spec) > 0
    end
    return setmetatable(inv, {
      __sim_object = "inventory:" .. tostring(index),
      __len = function()
        return size
      end,
      __index = function(_, k)
        if raw_type(k) == "number" then
          if k < 1 or k > size or k ~= math.floor(k) then
            raw_error("Index out of bounds: " .. tostring(k), 2)
          end
          return item_stack(inv, slots, k)
        end
        return methods[k]
      end,
      __newindex = function()
        raw_error("LuaInventory is read-only", 2)
      end,
    })
  end
end

local characters = {}      -- unit_number -> character entity
local character_slots = {} -- unit_number -> {inventory id -> slots}
-- The crafting queue belongs to the character (a new character has none): unit -> {{recipe, count}}.
local character_queue = {}
-- `crafting_queue` as Factorio shows it (nil when empty), refreshed on every change.
local function show_queue(p, queue)
  local out = nil
  for i, e in ipairs(queue) do
    out = out or {}
    out[i] = { index = i, recipe = e.recipe, count = e.count, prerequisite = false }
  end
  p.crafting_queue = out
  p.crafting_queue_size = #queue
end

local next_unit = 1

local function new_character(unit, slots, queue)
  unit = unit or next_unit
  if unit >= next_unit then
    next_unit = unit + 1
  end
  slots = slots or {}
  for id in raw_pairs(character_inventories) do
    slots[id] = slots[id] or {}
  end
  character_slots[unit] = slots
  character_queue[unit] = queue or {}
  local inventories = {}
  for id, d in raw_pairs(character_inventories) do
    inventories[id] = new_inventory(id, d.size, slots[id])
  end
  local c
  c = object("character", unit, {
    name = "character",
    type = "character",
    unit_number = unit,
    valid = true,
    player = nil,
    surface = surfaces.nauvis,
    position = { x = 0, y = 0 },
    get_inventory = function(id)
      return inventories[id]
    end,
    get_main_inventory = function()
      return inventories[1]
    end,
    get_item_count = function(spec)
      local n = 0
      for _, id in ipairs(inventory_order) do
        n = n + inventories[id].get_item_count(spec)
      end
      return n
    end,
    insert = function(spec)
      return inventories[1].insert(spec)
    end,
    remove_item = function(spec)
      local _, c0 = stack_spec(spec, "item")
      local left = c0
      for _, id in ipairs(inventory_order) do
        if left > 0 then
          local s = raw_type(spec) == "table" and { name = spec.name, count = left, quality = spec.quality } or { name = spec, count = left }
          left = left - inventories[id].remove(s)
        end
      end
      return c0 - left
    end,
    clear_items_inside = function()
      for _, inv in raw_pairs(inventories) do
        inv.clear()
      end
    end,
    destroy = function()
      if not c.valid then
        return false
      end
      c.valid = false
      characters[unit], character_slots[unit], character_queue[unit] = nil, nil, nil
      local p = c.player
      if p and p.character == c then
        p.character = nil
        show_queue(p, {})
        p.controller_type = defines.controllers.ghost
        p.physical_controller_type = defines.controllers.ghost
      end
      c.player = nil
      return true
    end,
  })
  characters[unit] = c
  return c
end

local function attach(p, c)
  p.character = c
  c.player = p
  show_queue(p, character_queue[c.unit_number] or {})
  p.controller_type = defines.controllers.character
  p.physical_controller_type = defines.controllers.character
end

local function new_player(index, name)
  local quick_bar = {}
  local p
  p = object("player", index, {
    name = name,
    index = index,
    valid = true,
    connected = false,
    admin = false,
    online_time = 0,
    afk_time = 0,
    tag = "",
    color = { r = 1, g = 0.6, b = 0, a = 1 },
    chat_color = { r = 1, g = 0.6, b = 0, a = 1 },
    cheat_mode = false,
    ticks_to_respawn = nil,
    force = forces.player,
    surface = surfaces.nauvis,
    object_name = "LuaPlayer",
    controller_type = defines.controllers.ghost,
    physical_controller_type = defines.controllers.ghost,
    character = nil,
    -- Shown to this player only: kept as `@<name> <text>` for `/standin printed`.
    print = function(msg)
      sim.game_print("@" .. name .. " " .. text_of(msg))
    end,
    play_sound = no_op,
    create_character = function()
      if p.character ~= nil then
        return false
      end
      attach(p, new_character())
      return true
    end,
    set_controller = function(spec)
      if raw_type(spec) ~= "table" or raw_type(spec.type) ~= "number" then
        raw_error("Invalid controller: expected {type = defines.controllers.…}", 2)
      end
      if spec.type == defines.controllers.character then
        local c = spec.character
        if raw_type(c) ~= "table" or not c.valid or c.name ~= "character" then
          raw_error("Character must be given when the controller type is character.", 2)
        end
        if c.player ~= nil and c.player ~= p then
          raw_error("The character is already controlled by another player.", 2)
        end
        if p.character and p.character ~= c then
          p.character.player = nil
        end
        attach(p, c)
      else
        -- The character (if any) stays behind in the world.
        if p.character then
          p.character.player = nil
        end
        p.character = nil
        p.controller_type = spec.type
        p.physical_controller_type = spec.type
        show_queue(p, {})
      end
    end,
    get_inventory = function(id)
      return p.character and p.character.get_inventory(id) or nil
    end,
    get_main_inventory = function()
      return p.character and p.character.get_main_inventory() or nil
    end,
    insert = function(spec)
      if not p.character then
        return 0
      end
      return p.character.insert(spec)
    end,
    remove_item = function(spec)
      if not p.character then
        return 0
      end
      return p.character.remove_item(spec)
    end,
    get_item_count = function(spec)
      return p.character and p.character.get_item_count(spec) or 0
    end,
    clear_items_inside = function()
      if p.character then
        p.character.clear_items_inside()
      end
    end,
    get_quick_bar_slot = function(i)
      local n = quick_bar[i]
      return n and item_prototype(n) or nil
    end,
    set_quick_bar_slot = function(i, item)
      if raw_type(i) ~= "number" or i < 1 or i > 100 then
        raw_error("Invalid quick bar slot " .. tostring(i), 2)
      end
      if raw_type(item) == "table" then
        item = item.name
      end
      quick_bar[i] = item
    end,
    begin_crafting = function(spec)
      if raw_type(spec) ~= "table" or raw_type(spec.recipe) ~= "string" then
        raw_error("Invalid crafting order: expected {count=…, recipe=…}", 2)
      end
      if not p.character then
        return 0
      end
      local queue = character_queue[p.character.unit_number]
      local count = math.floor(spec.count or 1)
      queue[#queue + 1] = { recipe = spec.recipe, count = count }
      show_queue(p, queue)
      return count
    end,
    cancel_crafting = function(spec)
      if not p.character then
        return
      end
      local queue = character_queue[p.character.unit_number]
      local i = spec and spec.index
      local e = queue[i]
      if e then
        e.count = e.count - (spec.count or e.count)
        if e.count <= 0 then
          table.remove(queue, i)
        end
      end
      show_queue(p, queue)
    end,
  })
  -- Kept beside the object for the save.
  getmetatable(p).__sim_quick_bar = quick_bar
  players[index] = p
  by_name[name] = p
  attach(p, new_character())
  return p
end


-- The players' persistent state (for the save): controllers, colours, quick bars, queues and
-- every character's inventories.
local function slots_out(slots)
  local out = {}
  for i, s in raw_pairs(slots) do
    out[#out + 1] = { slot = i, name = s.name, count = s.count, quality = s.quality }
  end
  return out
end

local function slots_in(list)
  local slots = {}
  for _, s in ipairs(list or {}) do
    if raw_type(s.slot) == "number" and raw_type(s.name) == "string" and raw_type(s.count) == "number" then
      slots[s.slot] = { name = s.name, count = s.count, quality = s.quality or "normal" }
    end
  end
  return slots
end

local function player_state()
  local chars = {}
  for unit, slots in raw_pairs(character_slots) do
    local inv = {}
    for id, d in raw_pairs(character_inventories) do
      inv[d.key] = slots_out(slots[id])
    end
    chars[#chars + 1] = { unit = unit, inventories = inv, crafting_queue = character_queue[unit] }
  end
  local ps = {}
  for _, p in ipairs(players) do
    local m = getmetatable(p)
    local qb = {}
    for i, n in raw_pairs(m.__sim_quick_bar) do
      qb[#qb + 1] = { slot = i, name = n }
    end
    ps[#ps + 1] = {
      index = p.index, name = p.name, color = p.color, chat_color = p.chat_color, tag = p.tag,
      cheat_mode = p.cheat_mode, controller_type = p.controller_type,
      character = p.character and p.character.unit_number or nil,
      quick_bar = qb,
    }
  end
  return { characters = chars, players = ps, next_unit = next_unit }
end

local function set_player_state(s)
  for unit in raw_pairs(characters) do
    characters[unit].valid = false
  end
  characters, character_slots, character_queue = {}, {}, {}
  for _, c in ipairs(s.characters or {}) do
    local slots = {}
    for id, d in raw_pairs(character_inventories) do
      slots[id] = slots_in(c.inventories and c.inventories[d.key])
    end
    local queue = {}
    for i, e in ipairs(c.crafting_queue or {}) do
      queue[i] = { recipe = e.recipe, count = e.count }
    end
    new_character(c.unit, slots, queue)
  end
  next_unit = math.max(next_unit, s.next_unit or 1)
  for _, ps in ipairs(s.players or {}) do
    local p = players[ps.index] or new_player(ps.index, ps.name)
    if p.character and not characters[p.character.unit_number] then
      p.character = nil
    end
    p.color = ps.color or p.color
    p.chat_color = ps.chat_color or p.chat_color
    p.tag = ps.tag or ""
    p.cheat_mode = ps.cheat_mode and true or false
    local c = ps.character and characters[ps.character]
    if c then
      attach(p, c)
    else
      p.character = nil
      p.controller_type = ps.controller_type or defines.controllers.ghost
      p.physical_controller_type = p.controller_type
    end
    local m = getmetatable(p)
    for k in raw_pairs(m.__sim_quick_bar) do
      m.__sim_quick_bar[k] = nil
    end
    for _, q in ipairs(ps.quick_bar or {}) do
      m.__sim_quick_bar[q.slot] = q.name
    end
  end
  -- Players the save did not know keep a character of their own.
  for _, p in ipairs(players) do
    if p.character and not p.character.valid then
      p.character = nil
      attach(p, new_character())
    end
  end
end

-- `/standin inventory <player>`: what the player has, `{controller, main = {item = n}, …}`.
local function inventory_view(p)
  local out = {
    controller = p.controller_type == defines.controllers.character and "character"
      or p.controller_type == defines.controllers.spectator and "spectator"
      or p.controller_type == defines.controllers.god and "god" or "ghost",
    color = p.color, tag = p.tag, quick_bar = {}, crafting_queue = {},
  }
  for _, id in ipairs(inventory_order) do
    local key = character_inventories[id].key
    out[key] = {}
    local inv = p.get_inventory(id)
    if inv then
      for _, s in ipairs(inv.get_contents()) do
        local k = s.quality == "normal" and s.name or (s.name .. ":" .. s.quality)
        out[key][k] = (out[key][k] or 0) + s.count
      end
    end
  end
  local m = getmetatable(p)
  for i, n in raw_pairs(m.__sim_quick_bar) do
    out.quick_bar[tostring(i)] = n
  end
  for _, e in ipairs(p.character and character_queue[p.character.unit_number] or {}) do
    out.crafting_queue[#out.crafting_queue + 1] = e.recipe .. " x" .. e.count
  end
  return out
end

local function connected_players()
  local out = {}
  for _, p in ipairs(players) do
    if p.connected then
      out[#out + 1] = p
    end
  end
  return out
end

local function write_file(name, data, append, for_player)
  if for_player ~= nil and for_player ~= 0 then
    return
  end
  local err = sim.write_file(tostring(name), text_of(data), append and true or false)
  if err then
    raw_error(err, 3)
  end
end

local function table_to_json(t)
  local s, err = sim.table_to_json(t)
  if not s then
    raw_error(err, 3)
  end
  return s
end


local game_fields = {
  players = player_list,
  forces = forces,
  surfaces = surfaces,
  get_player = function(k)
    if raw_type(k) == "string" then
      return by_name[k]
    end
    return players[k]
  end,
  get_surface = function(k)
    return surfaces[k]
  end,
  get_pollution_statistics = function(surface)
    return flow_statistics("pollution", surface)
  end,
  -- Shown to every player; the sim keeps the text for `/standin printed`.
  print = function(msg)
    sim.game_print(text_of(msg))
  end,
  -- Kept as `sound: <path>` beside the printed texts.
  play_sound = function(spec)
    sim.game_print("sound: " .. tostring(raw_type(spec) == "table" and spec.path or spec))
  end,
  disable_replay = no_op,
  is_multiplayer = function()
    return true
  end,
  is_valid_sound_path = function()
    return true
  end,
  tick_paused = false,
  speed = 1,
  object_name = "LuaGameScript",
  default_map_gen_settings = { seed = sim.seed },
}
if is_1_1 then
  game_fields.table_to_json = table_to_json
  game_fields.json_to_table = sim.json_to_table
  game_fields.write_file = write_file
  game_fields.active_mods = active_mods
  game_fields.item_prototypes = {}
  game_fields.technology_prototypes = {}
end

game = setmetatable({}, {
  __index = function(_, k)
    if k == "tick" or k == "ticks_played" then
      return tick
    elseif k == "connected_players" then
      return connected_players()
    end
    return game_fields[k]
  end,
  __newindex = function(_, k, v)
    if k == "tick_paused" or k == "speed" then
      game_fields[k] = v
    else
      raw_error("LuaGameScript doesn't contain key " .. tostring(k) .. ".", 2)
    end
  end,
})

if not is_1_1 then
  helpers = {
    table_to_json = table_to_json,
    json_to_table = sim.json_to_table,
    write_file = write_file,
    is_valid_sound_path = function()
      return true
    end,
  }
  prototypes = { item = {}, technology = {}, entity = {}, fluid = {}, quality = { normal = { name = "normal", level = 0 } } }
end

settings = { global = {}, startup = {}, player = {} }

rcon = {
  print = function(v)
    sim.rcon_print(text_of(v))
  end,
}

-- remote ----------------------------------------------------------------------------------------
local interfaces = {}
-- Interfaces live in the state that added them; calls into another state (a mod's, or the
-- level's from a mod) copy arguments and results across, as Factorio does.
local function local_interfaces()
  local copy = {}
  for name, i in raw_pairs(interfaces) do
    local fs = {}
    for k in raw_pairs(i) do
      fs[k] = true
    end
    copy[name] = fs
  end
  return copy
end

local function all_interfaces()
  local all = sim.remote_interfaces()
  for k, v in raw_pairs(local_interfaces()) do
    all[k] = v
  end
  return all
end

remote = {
  add_interface = function(name, funcs)
    if raw_type(name) ~= "string" or raw_type(funcs) ~= "table" then
      raw_error("bad argument to 'add_interface'", 2)
    end
    if interfaces[name] or not sim.remote_add(name) then
      raw_error("Remote interface with name " .. tostring(name) .. " already exists.", 2)
    end
    interfaces[name] = funcs
  end,
  remove_interface = function(name)
    local had = interfaces[name] ~= nil
    if had then
      interfaces[name] = nil
      sim.remote_remove(name)
    end
    return had
  end,
  call = function(name, fn, ...)
    local i = interfaces[name]
    if not i then
      return sim.remote_call(name, fn, ...)
    end
    local f = i[fn]
    if not f then
      raw_error("No such function: " .. tostring(name) .. "." .. tostring(fn), 2)
    end
    return f(...)
  end,
}
remote.interfaces = setmetatable({}, {
  __index = function(_, name)
    return all_interfaces()[name]
  end,
  __pairs = function()
    return next, all_interfaces(), nil
  end,
})

-- commands --------------------------------------------------------------------------------------
local custom = {}
commands = {
  add_command = function(name, help, f)
    if custom[name] then
      raw_error("Command \"" .. tostring(name) .. "\" already exists.", 2)
    end
    custom[name] = { help = help, f = f }
  end,
  remove_command = function(name)
    local had = custom[name] ~= nil
    custom[name] = nil
    return had
  end,
  commands = setmetatable({}, {
    __index = function(_, k)
      return custom[k] and custom[k].help or nil
    end,
  }),
  game_commands = {},
}

-- require ---------------------------------------------------------------------------------------
local loaded = {}
package = { loaded = {} }
local function normalise(name)
  name = name:gsub("%.lua$", "")
  if not name:find("/", 1, true) then
    name = name:gsub("%.", "/")
  end
  return name
end

local function join(dir, name)
  local parts = {}
  for piece in (dir .. name):gmatch("[^/]+") do
    if piece == ".." then
      if #parts == 0 then
        return nil
      end
      parts[#parts] = nil
    elseif piece ~= "." then
      parts[#parts + 1] = piece
    end
  end
  return table.concat(parts, "/")
end

require = function(name)
  if raw_type(name) ~= "string" then
    raw_error("bad argument #1 to 'require' (string expected, got " .. raw_type(name) .. ")", 2)
  end
  if not parsing then
    raw_error("Require can't be used outside of control.lua parsing.", 2)
  end
  local info = debug.getinfo(2, "S")
  local src = info and info.source or ""
  -- the requiring file: "@__<owner>__/<path>"
  local from, from_path = src:match("^@__([^/]-)__/(.*)$")
  local from_kind = from and (from == "level" and "level" or (from ~= "core" and "mod:" .. from)) or nil
  local dir = from_path and from_path:match("^(.*/)[^/]*$") or ""
  local n = normalise(name)
  local candidates = {}
  local prefix, rest = n:match("^__([^/]-)__/(.*)$")
  if prefix then
    if prefix == "core" then
      local lib = rest:match("^lualib/(.*)$")
      if lib then
        candidates[1] = { "lualib", lib }
      end
    elseif prefix == "level" then
      candidates[1] = { "level", rest }
    else
      candidates[1] = { "mod:" .. prefix, rest }
    end
  else
    if from_kind then
      candidates[#candidates + 1] = { from_kind, join(dir, n) }
      if dir ~= "" then
        candidates[#candidates + 1] = { from_kind, join("", n) }
      end
    end
    candidates[#candidates + 1] = { "lualib", n }
  end
  local tried = {}
  for _, c in ipairs(candidates) do
    local kind, path = c[1], c[2]
    if path then
      local key = kind .. ":" .. path
      if loaded[key] ~= nil then
        return loaded[key]
      end
      local text = sim.source(kind, path .. ".lua")
      local chunkname
      if kind == "level" then
        chunkname = "@__level__/" .. path .. ".lua"
      elseif kind == "lualib" then
        chunkname = "@__core__/lualib/" .. path .. ".lua"
      else
        chunkname = "@__" .. kind:sub(5) .. "__/" .. path .. ".lua"
      end
      if text then
        local f, err = raw_load(text, chunkname, "t")
        if not f then
          raw_error(err, 0)
        end
        local r = f(name)
        if r == nil then
          r = true
        end
        loaded[key] = r
        package.loaded[name] = r
        return r
      end
      tried[#tried + 1] = chunkname:sub(2)
    end
  end
  raw_error("module " .. name .. " not found;  no such file(s): " .. table.concat(tried, ", "), 2)
end

-- storage ---------------------------------------------------------------------------------------
local function set_storage(t)
  if is_1_1 then
    global = t
  else
    storage = t
  end
end
set_storage({})

-- running handlers ------------------------------------------------------------------------------
local function clean(tb)
  local out = {}
  for line in (tb .. "\n"):gmatch("(.-)\n") do
    line = line:gsub("^\t", "")
    if not line:find("[sim]", 1, true) and line ~= "[C]: in function 'xpcall'" then
      out[#out + 1] = line
    end
  end
  return table.concat(out, "\n")
end

local function on_error(e)
  return clean(traceback(tostring(e), 2))
end

local function run(label, f, ...)
  local ok, err = xpcall(f, on_error, ...)
  if not ok then
    return false, crash_prefix .. label .. "\n" .. err
  end
  return true
end

local function event_label(id)
  local n = event_name_of[id] or tostring(id)
  return "Error while running event " .. owner .. "::" .. n .. " (ID " .. tostring(id) .. ")"
end

dispatch = function(id, data)
  local f = handlers[id]
  if not f then
    return true
  end
  local ev = data or {}
  ev.name, ev.tick = id, tick
  return run(event_label(id), f, ev)
end

local own_kind = owner == "level" and "level" or "mod:" .. owner

function api.run_main()
  local ok, err = xpcall(function()
    return require("__" .. owner .. "__/control")
  end, on_error)
  parsing = false
  if not ok then
    return false, crash_prefix .. err
  end
  return true
end

function api.has_level()
  return sim.source(own_kind, "control.lua") ~= nil
end

function api.local_interfaces()
  return local_interfaces()
end

function api.remote_invoke(name, fn, ...)
  local i = interfaces[name]
  if not i then
    raw_error("Unknown interface: " .. tostring(name), 0)
  end
  local f = i[fn]
  if not f then
    raw_error("No such function: " .. tostring(name) .. "." .. tostring(fn), 0)
  end
  return f(...)
end

function api.init()
  parsing = false
  if on_init_f then
    local ok, err = xpcall(on_init_f, on_error)
    if not ok then
      return false, crash_prefix .. "Error while running on_init: " .. err
    end
  end
  return true
end

function api.load(t)
  parsing = false
  set_storage(t)
  if on_load_f then
    local ok, err = xpcall(on_load_f, on_error)
    if not ok then
      return false, crash_prefix .. "Error while running on_load: " .. err
    end
  end
  return true
end

function api.configuration_changed(data)
  if on_config_f then
    local ok, err = xpcall(on_config_f, on_error, data)
    if not ok then
      return false, crash_prefix .. "Error while running on_configuration_changed: " .. err
    end
  end
  return true
end

function api.storage()
  if is_1_1 then
    return global
  end
  return storage
end

function api.set_tick(t)
  tick = t
end

function api.wants_ticks()
  return handlers[0] ~= nil or #nth_order > 0
end

function api.tick(t)
  tick = t
  local f = handlers[0]
  if f then
    local ok, err = run(event_label(0), f, { name = 0, tick = t })
    if not ok then
      return false, err
    end
  end
  for _, n in ipairs(nth_order) do
    local g = nth[n]
    if g and t % n == 0 then
      local ok, err = run("Error while running event " .. owner .. "::on_nth_tick(" .. n .. ")", g, { tick = t, nth_tick = n })
      if not ok then
        return false, err
      end
    end
  end
  return true
end

function api.raise(name, data)
  return dispatch(events[name], data)
end

function api.command(code)
  local f, err = raw_load(code, code, "t")
  if not f then
    return "Cannot execute command. Error: " .. err
  end
  local ok, e = pcall(f)
  if not ok then
    return "Cannot execute command. Error: " .. tostring(e)
  end
  return nil
end

function api.has_command(name)
  return custom[name] ~= nil
end

function api.custom_command(name, parameter, player_index)
  local c = custom[name]
  if not c then
    return true
  end
  return run("Error while running command \"" .. name .. "\"", c.f, {
    name = name, tick = tick, parameter = parameter, player_index = player_index,
  })
end

function api.player(index, name, connected, admin)
  local p = players[index] or new_player(index, name)
  p.connected, p.admin = connected, admin
end

function api.player_joined(index, first)
  local p = players[index]
  if not p then
    return true
  end
  p.connected = true
  if first then
    local ok, err = dispatch(events.on_player_created, { player_index = index })
    if not ok then
      return false, err
    end
  end
  return dispatch(events.on_player_joined_game, { player_index = index })
end

function api.player_left(index, reason)
  local p = players[index]
  if not p then
    return true
  end
  local r = defines.disconnect_reason[reason] or 0
  local ok, err = dispatch(events.on_pre_player_left_game, { player_index = index, reason = r })
  if not ok then
    return false, err
  end
  p.connected = false
  return dispatch(events.on_player_left_game, { player_index = index, reason = r })
end

function api.set_admin(index, admin)
  local p = players[index]
  if p then
    p.admin = admin
  end
end

function api.research(name, level, progress, relative)
  local t = techs[name] or new_tech(name, level and level > 1 and 4294967295 or 1, level or 1)
  local force = forces.player
  if level then
    t.level = level
  end
  if relative and progress then
    local now = force.current_research == t and force.research_progress or t.saved_progress or 0
    progress = now + progress
  end
  if progress and progress < 1 then
    local last = force.current_research
    force.current_research = t
    force.research_progress = progress
    t.saved_progress = progress
    return dispatch(events.on_research_started, { research = t, last_research = last })
  end
  if t.prototype.max_level > t.level then
    t.level = t.level + 1
  else
    tech_data[name].researched = true
  end
  t.saved_progress = 0
  if force.current_research == t then
    force.current_research = nil
    force.research_progress = 0
  end
  return dispatch(events.on_research_finished, { research = t, by_script = false })
end

function api.tech_state()
  local out = {}
  for name, t in raw_pairs(techs) do
    if t.researched or (t.saved_progress or 0) ~= 0 or t.level ~= t.prototype.level then
      out[name] = { level = t.level, researched = t.researched, saved_progress = t.saved_progress or 0, max_level = t.prototype.max_level }
    end
  end
  local f = forces.player
  return {
    techs = out,
    current = f.current_research and f.current_research.name or nil,
    progress = f.research_progress or 0,
  }
end

function api.set_tech_state(s)
  for name, v in raw_pairs(s.techs or {}) do
    if not techs[name] then
      new_tech(name, v.max_level or 1, v.level or 1)
    end
    local d = tech_data[name]
    d.level, d.researched, d.saved_progress = v.level or 1, v.researched and true or false, v.saved_progress or 0
  end
  local f = forces.player
  f.current_research = s.current and techs[s.current] or nil
  f.research_progress = s.progress or 0
end


function api.player_state()
  return player_state()
end

function api.set_player_state(s)
  set_player_state(s)
end

-- `/standin give <player> <item> <count>`: how many went in.
function api.give(name, item, count)
  local p = by_name[name]
  if not p then
    return nil, "no player named " .. name
  end
  if not p.character then
    return nil, name .. " has no character"
  end
  return p.insert({ name = item, count = count })
end

function api.inventory(name)
  local p = by_name[name]
  if not p then
    return nil, "no player named " .. name
  end
  return table_to_json(inventory_view(p))
end

function api.object(ref)
  local kind, key = ref:match("^(%a+):(.*)$")
  if kind == "character" then
    return characters[tonumber(key)]
  elseif kind == "player" then
    return players[tonumber(key)]
  elseif kind == "force" then
    return forces[key]
  elseif kind == "technology" then
    return techs[key]
  elseif kind == "surface" then
    return surfaces[key]
  end
  return nil
end

return api
