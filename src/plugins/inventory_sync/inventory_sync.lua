-- inventory_sync: a player's character (inventories, quick bar, crafting queue, colour) follows
-- them from game to game. Written for clustorio.
--
-- One game at a time holds a player (a lock on the controller). On join the player watches as a
-- spectator while this game asks for the lock and, when the cluster has a newer inventory than
-- this game, downloads it in chunks over RCON. On leave the game serialises the player with the
-- next generation and uploads it; the upload is kept here (and re-sent at every start) until the
-- host confirms the controller committed it. When the sync fails the player plays with a
-- temporary character whose items are merged into the synced inventory at the next successful
-- sync, so nothing is lost.
local api = require("modules/clusterio/api")
local compat = require("modules/clusterio/compat")

inventory_sync = {}

-- Ticks before an unanswered acquire, or a download that stopped, counts as failed.
local RESPONSE_TIMEOUT = 600
-- Ticks between two asks while another game holds the player.
local BUSY_RETRY = 120
-- Ticks between two tries to sync a player on a temporary inventory.
local TEMPORARY_RETRY = 300

-- Serialised inventories, armour first (it can change the size of the others).
local INVENTORIES = {
	{ "armor", "character_armor" },
	{ "main", "character_main" },
	{ "guns", "character_guns" },
	{ "ammo", "character_ammo" },
	{ "trash", "character_trash" },
}
local QUICK_BAR_SLOTS = 100

local function state()
	local data = compat.script_data()
	data.inventory_sync = data.inventory_sync or { players = {} }
	return data.inventory_sync
end

-- One player's sync record: `state` is offline | waiting | downloading | synced | temporary.
local function record(name)
	local players = state().players
	local rec = players[name]
	if rec == nil then
		rec = { generation = 0, state = "offline", overflow = {} }
		players[name] = rec
	end
	rec.overflow = rec.overflow or {}
	return rec
end

local function valid(entity)
	return entity ~= nil and entity.valid
end

local function to_spectator(player)
	if player.controller_type ~= defines.controllers.spectator then
		player.set_controller({ type = defines.controllers.spectator })
	end
end

local function take_character(player, character)
	player.set_controller({ type = defines.controllers.character, character = character })
end

-- Serialisation -------------------------------------------------------------------------------

local function stacks_of(inventory)
	local out = {}
	for i = 1, #inventory do
		local stack = inventory[i]
		if stack.valid_for_read then
			local quality = stack.quality
			out[#out + 1] = { i, stack.name, stack.count, quality and quality.name or "normal" }
		end
	end
	return out
end

function inventory_sync.serialize(player, generation)
	local rec = record(player.name)
	local data = {
		name = player.name,
		generation = generation,
		color = player.color,
		chat_color = player.chat_color,
		tag = player.tag,
		cheat_mode = player.cheat_mode,
		inventories = {},
		quick_bar = {},
		crafting_queue = {},
		overflow = rec.overflow,
	}
	for _, def in ipairs(INVENTORIES) do
		local inventory = player.get_inventory(defines.inventory[def[2]])
		if inventory ~= nil then
			data.inventories[def[1]] = stacks_of(inventory)
		end
	end
	for i = 1, QUICK_BAR_SLOTS do
		local item = player.get_quick_bar_slot(i)
		if item ~= nil then
			data.quick_bar[#data.quick_bar + 1] = { i, item.name }
		end
	end
	for _, craft in ipairs(player.crafting_queue or {}) do
		data.crafting_queue[#data.crafting_queue + 1] = { craft.recipe, craft.count }
	end
	return data
end

-- Puts what does not fit into the player's overflow, which travels with them.
local function give(player, rec, name, count, quality)
	local inserted = player.insert({ name = name, count = count, quality = quality })
	if inserted < count then
		rec.overflow[#rec.overflow + 1] = { name, count - inserted, quality }
	end
end

-- Fills the player's (fresh) character from `data`.
function inventory_sync.deserialize(player, data)
	local rec = record(player.name)
	if type(data.color) == "table" then
		player.color = data.color
	end
	if type(data.chat_color) == "table" then
		player.chat_color = data.chat_color
	end
	if type(data.tag) == "string" then
		player.tag = data.tag
	end
	player.cheat_mode = data.cheat_mode == true
	local inventories = type(data.inventories) == "table" and data.inventories or {}
	for _, def in ipairs(INVENTORIES) do
		local inventory = player.get_inventory(defines.inventory[def[2]])
		for _, s in ipairs(inventories[def[1]] or {}) do
			local slot, name, count, quality = s[1], s[2], s[3], s[4] or "normal"
			if type(name) == "string" and type(count) == "number" and count > 0 then
				if inventory ~= nil and type(slot) == "number" and slot >= 1 and slot <= #inventory
					and not inventory[slot].valid_for_read then
					inventory[slot].set_stack({ name = name, count = count, quality = quality })
					local placed = inventory[slot].valid_for_read and inventory[slot].count or 0
					if placed < count then
						give(player, rec, name, count - placed, quality)
					end
				else
					give(player, rec, name, count, quality)
				end
			end
		end
	end
	for _, q in ipairs(data.quick_bar or {}) do
		if type(q[1]) == "number" and type(q[2]) == "string" then
			player.set_quick_bar_slot(q[1], q[2])
		end
	end
	for _, c in ipairs(data.crafting_queue or {}) do
		if type(c[1]) == "string" and type(c[2]) == "number" then
			player.begin_crafting({ recipe = c[1], count = c[2], silent = true })
		end
	end
	for _, o in ipairs(data.overflow or {}) do
		rec.overflow[#rec.overflow + 1] = o
	end
end

-- The sync --------------------------------------------------------------------------------------

local function ask(player, rec)
	rec.asked = game.tick
	rec.answered = false
	api.send_json("inventory_sync:acquire", { player = player.name })
end

-- Moves every item of `from` (a character) into the player; what does not fit overflows.
local function merge(player, rec, from)
	local moved = 0
	for _, def in ipairs(INVENTORIES) do
		local inventory = from.get_inventory(defines.inventory[def[2]])
		if inventory ~= nil then
			for _, s in ipairs(stacks_of(inventory)) do
				give(player, rec, s[2], s[3], s[4])
				moved = moved + s[3]
			end
			inventory.clear()
		end
	end
	from.destroy()
	return moved
end

-- Overflow goes back in whenever there is room.
local function drain_overflow(player, rec)
	if #rec.overflow == 0 or not valid(player.character) then
		return
	end
	local left = {}
	for _, o in ipairs(rec.overflow) do
		local inserted = player.insert({ name = o[1], count = o[2], quality = o[3] })
		if inserted < o[2] then
			left[#left + 1] = { o[1], o[2] - inserted, o[3] }
		end
	end
	rec.overflow = left
end

-- The sync succeeded: `data` is a newer inventory from the cluster, or nil when this game's is
-- current.
local function finish(player, rec, data, generation)
	local temporary = valid(rec.temp) and rec.temp or nil
	to_spectator(player)
	if data ~= nil then
		if valid(rec.home) and rec.home ~= temporary then
			rec.home.destroy()
		end
		player.create_character()
		inventory_sync.deserialize(player, data)
		rec.generation = data.generation
	else
		if valid(rec.home) and rec.home ~= temporary and rec.home.player == nil then
			take_character(player, rec.home)
		else
			player.create_character()
		end
		rec.generation = math.max(rec.generation, generation or 0)
	end
	rec.home = player.character
	rec.state = "synced"
	rec.download = nil
	if temporary ~= nil then
		local moved = merge(player, rec, temporary)
		rec.temp = nil
		player.print("Your temporary inventory (" .. moved .. " items) was merged into your synchronised one.")
	else
		player.print("Inventory synchronised with the cluster.")
	end
	drain_overflow(player, rec)
end

-- The sync failed: play on with a temporary character, merged at the next successful sync.
local function fail(player, rec, message)
	rec.download = nil
	rec.next_try = game.tick + TEMPORARY_RETRY
	local first = rec.state ~= "temporary" or player.character == nil
	rec.state = "temporary"
	if player.character == nil then
		if valid(rec.temp) and rec.temp.player == nil then
			take_character(player, rec.temp)
		else
			player.create_character()
			rec.temp = player.character
		end
	end
	if first then
		player.print("Inventory sync failed (" .. tostring(message) .. "). You are playing with a temporary inventory; it will be merged into your synchronised inventory once the sync works.")
	end
end

local function begin(player)
	local rec = record(player.name)
	rec.online = true
	rec.holder = nil
	if valid(player.character) and player.character ~= rec.temp then
		rec.home = player.character
	end
	to_spectator(player)
	if rec.state ~= "temporary" then
		rec.state = "waiting"
	end
	player.print("Synchronising your inventory with the cluster…")
	ask(player, rec)
end

local function leave(player)
	local rec = record(player.name)
	rec.online = false
	if rec.state == "synced" then
		rec.generation = rec.generation + 1
		local data = inventory_sync.serialize(player, rec.generation)
		rec.pending = data
		rec.home = player.character
		rec.state = "offline"
		api.send_json("inventory_sync:upload", { player = player.name, generation = rec.generation, data = data, release = true })
	elseif rec.state == "waiting" or rec.state == "downloading" then
		rec.state = "offline"
		rec.download = nil
		api.send_json("inventory_sync:release", { player = player.name })
	elseif rec.state == "temporary" then
		-- The temporary character stays here for the next visit. A lock granted to an ask whose
		-- answer was lost is given back (a release frees only this game's own lock).
		api.send_json("inventory_sync:release", { player = player.name })
	end
end

-- RCON (host → game) ------------------------------------------------------------------------------

-- `{player, status = acquired|busy|error, generation, has_data, message}`.
function inventory_sync.acquire_response(json)
	local r = compat.json_to_table(json)
	if type(r) ~= "table" or type(r.player) ~= "string" then
		return
	end
	local player = game.get_player(r.player)
	local rec = record(r.player)
	rec.answered = true
	if player == nil or not player.connected or not (rec.state == "waiting" or rec.state == "temporary") then
		-- The player left before the answer: give the lock back.
		if r.status == "acquired" and rec.state ~= "synced" then
			api.send_json("inventory_sync:release", { player = r.player })
		end
		return
	end
	if r.status == "acquired" then
		local generation = tonumber(r.generation) or 0
		if r.has_data and generation > rec.generation then
			if rec.state == "temporary" then
				to_spectator(player)
			end
			rec.state = "downloading"
			rec.download = { generation = generation, chunks = {}, received = 0, last = game.tick }
			api.send_json("inventory_sync:download", { player = r.player })
		else
			finish(player, rec, nil, generation)
		end
	elseif r.status == "busy" then
		rec.next_try = game.tick + BUSY_RETRY
		if rec.holder ~= r.message and rec.state == "waiting" then
			player.print("Your inventory is in use on " .. tostring(r.message) .. "; waiting for it…")
		end
		rec.holder = r.message
	else
		fail(player, rec, r.message or r.status)
	end
end

-- One chunk of a download: `i` of `n`; `n = 0` means the controller has nothing.
function inventory_sync.download_chunk(name, generation, i, n, chunk)
	local rec = record(name)
	local player = game.get_player(name)
	local d = rec.download
	if player == nil or rec.state ~= "downloading" or d == nil then
		return
	end
	if n == 0 then
		finish(player, rec, nil, generation)
		return
	end
	if generation ~= d.generation then
		d.generation, d.chunks, d.received = generation, {}, 0
	end
	if d.chunks[i] == nil then
		d.chunks[i] = chunk
		d.received = d.received + 1
	end
	d.last = game.tick
	if d.received < n then
		return
	end
	local text = table.concat(d.chunks, "", 1, n)
	local ok, data = pcall(compat.json_to_table, text)
	if not ok or type(data) ~= "table" or tonumber(data.generation) == nil then
		fail(player, rec, "the downloaded inventory is damaged")
		return
	end
	data.generation = tonumber(data.generation)
	finish(player, rec, data, generation)
end

function inventory_sync.download_failed(name, message)
	local rec = record(name)
	local player = game.get_player(name)
	if player ~= nil and rec.state == "downloading" then
		fail(player, rec, message)
	end
end

-- The controller answered the upload of `generation`: committed (`stored`), or refused because
-- another game holds the player or has a newer generation. After a refusal this game's copy is
-- no stored generation, so the next join downloads the cluster's.
function inventory_sync.confirm_upload(name, generation, stored)
	local rec = record(name)
	if rec.pending ~= nil and rec.pending.generation <= generation then
		rec.pending = nil
		if stored == false and rec.generation == generation then
			rec.generation = 0
		end
	end
end

-- At every start: re-send unconfirmed uploads; players the save had online (the game stopped
-- without them leaving) are uploaded as they were saved, and pending syncs are given up.
function inventory_sync.startup()
	for name, rec in pairs(state().players) do
		local player = game.get_player(name)
		local online = player ~= nil and player.connected
		if not online then
			rec.online = false
			if rec.state == "synced" and player ~= nil and valid(player.character) then
				rec.generation = rec.generation + 1
				rec.pending = inventory_sync.serialize(player, rec.generation)
				rec.state = "offline"
			elseif rec.state == "waiting" or rec.state == "downloading" then
				rec.state = "offline"
				rec.download = nil
				api.send_json("inventory_sync:release", { player = name })
			end
		end
		if rec.pending ~= nil then
			api.send_json("inventory_sync:upload", { player = name, generation = rec.pending.generation, data = rec.pending, release = not online })
		end
	end
end

-- For tests and admins: the player's sync record.
function inventory_sync.status(name)
	local rec = state().players[name]
	if rec == nil then
		rcon.print("{}")
		return
	end
	rcon.print(compat.table_to_json({
		state = rec.state,
		generation = rec.generation,
		pending = rec.pending and rec.pending.generation or nil,
		holder = rec.holder,
		overflow = #rec.overflow,
	}))
end

-- Events ----------------------------------------------------------------------------------------

local lib = { events = {}, on_nth_tick = {} }

lib.events[defines.events.on_player_joined_game] = function(event)
	local player = game.get_player(event.player_index)
	if player ~= nil then
		begin(player)
	end
end

lib.events[defines.events.on_pre_player_left_game] = function(event)
	local player = game.get_player(event.player_index)
	if player ~= nil then
		leave(player)
	end
end

lib.on_nth_tick[30] = function()
	local now = game.tick
	for name, rec in pairs(state().players) do
		local player = game.get_player(name)
		if player ~= nil and player.connected then
			if rec.state == "waiting" then
				if not rec.answered and now - (rec.asked or now) > RESPONSE_TIMEOUT then
					fail(player, rec, "the cluster did not answer")
				elseif rec.answered and rec.next_try ~= nil and now >= rec.next_try then
					rec.next_try = nil
					ask(player, rec)
				end
			elseif rec.state == "downloading" then
				if rec.download ~= nil and now - rec.download.last > RESPONSE_TIMEOUT then
					fail(player, rec, "the download stopped")
				end
			elseif rec.state == "temporary" then
				if player.character == nil and not rec.answered and now - (rec.asked or now) > RESPONSE_TIMEOUT then
					fail(player, rec, "the cluster did not answer")
				elseif rec.next_try ~= nil and now >= rec.next_try and (rec.answered or now - (rec.asked or 0) > RESPONSE_TIMEOUT) then
					rec.next_try = now + TEMPORARY_RETRY
					ask(player, rec)
				end
			elseif rec.state == "synced" then
				drain_overflow(player, rec)
			end
		end
	end
end

return lib
