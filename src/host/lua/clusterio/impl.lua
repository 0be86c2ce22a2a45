-- clustorio core module: start-up detection, instance identity, player events and the
-- `clusterio_api` remote interface mods call. Loaded as an event_handler library.
-- Written for clustorio; the names follow the contract Clusterio's modules expect.
local api = require("modules/clusterio/api")
local compat = require("modules/clusterio/compat")

local impl = { events = {} }

-- The loader sets `clusterio_patch_number`; a new number means a new start of a patched save.
local function check_patch()
	local data = compat.script_data()
	if data.clusterio_patch_number ~= clusterio_patch_number then
		data.clusterio_patch_number = clusterio_patch_number
		data.clusterio = data.clusterio or {}
		script.raise_event(api.events.on_server_startup, {})
	end
end

impl.events[api.events.on_server_startup] = function()
	-- A patched save's replay cannot be played back.
	game.disable_replay()
end

impl.events[defines.events.on_tick] = function()
	check_patch()
end

local function reason_name(reason)
	for name, value in pairs(defines.disconnect_reason or {}) do
		if value == reason then
			return name
		end
	end
	return "quit"
end

local function player_name(event)
	local player = event.player_index and game.get_player(event.player_index)
	return player and player.name or event.player_name
end

impl.events[defines.events.on_player_joined_game] = function(event)
	api.send_json("player_event", { type = "join", name = player_name(event) })
end

impl.events[defines.events.on_player_left_game] = function(event)
	api.send_json("player_event", { type = "leave", name = player_name(event), reason = reason_name(event.reason) })
end

impl.events[defines.events.on_player_banned] = function(event)
	api.send_json("player_event", { type = "BAN", name = event.player_name, reason = event.reason })
end

impl.events[defines.events.on_player_unbanned] = function(event)
	api.send_json("player_event", { type = "UNBANNED", name = event.player_name, reason = event.reason })
end

impl.events[defines.events.on_player_promoted] = function(event)
	api.send_json("player_event", { type = "PROMOTE", name = player_name(event) })
end

impl.events[defines.events.on_player_demoted] = function(event)
	api.send_json("player_event", { type = "DEMOTE", name = player_name(event) })
end

-- Called by the host over RCON once the game runs: `/sc clusterio_private.update_instance(id, "name")`.
clusterio_private = {
	update_instance = function(id, name)
		check_patch()
		local data = compat.script_data()
		data.clusterio = data.clusterio or {}
		data.clusterio.instance_id = id
		data.clusterio.instance_name = name
		script.raise_event(api.events.on_instance_updated, { instance_id = id, instance_name = name })
	end,
}

-- Registered while the file loads (not in an event) so a mod's on_init already finds it.
if remote.interfaces["clusterio_api"] == nil then
	remote.add_interface("clusterio_api", {
		get_events = function()
			return api.events
		end,
		get_instance_id = api.get_instance_id,
		get_instance_name = api.get_instance_name,
		get_file_no = api.next_file_no,
	})
end

return impl
