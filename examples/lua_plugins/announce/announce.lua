-- announce: an example Lua-only plugin for clustorio (no server-side code).
--   /announce <text>  shows <text> on every other server of the cluster that runs the plugin
--   /count            adds one to a counter kept in the cluster's key-value store
-- Over RCON: /sc announce.send("text"), /sc announce.bump(), /sc announce.read(),
-- /sc announce.dump() (prints this game's state as JSON).
-- The host calls the two callbacks below (docs/plugins.md).
local api = require("modules/clusterio/api")
local compat = require("modules/clusterio/compat")

announce = {}

local function state()
	local data = compat.script_data()
	data.announce = data.announce or { received = {}, answers = 0 }
	return data.announce
end

function announce.send(text)
	api.send_json("announce:broadcast", { text = text })
	game.print("[announce] " .. text)
end

-- Read the counter (value and version); the answer comes back in announce_on_kv with ref
-- "bump", which then stores the value plus one if the version is still the one read.
function announce.bump()
	api.send_json("announce:kv_get", { key = "counter", ref = "bump" })
end

function announce.read()
	api.send_json("announce:kv_get", { key = "counter", ref = "read" })
end

function announce.dump()
	rcon.print(compat.table_to_json(state()))
end

-- Another game's broadcast: {from_instance_id, from_instance, data}.
function announce_on_broadcast(json)
	local message = compat.json_to_table(json)
	local text = message.data and message.data.text or ""
	table.insert(state().received, { from = message.from_instance, text = text })
	game.print("[" .. tostring(message.from_instance) .. "] " .. tostring(text))
end

-- The controller's answer to a kv_get/kv_set/kv_delete: {ok, op, key, value, ref, error?}.
function announce_on_kv(json)
	local answer = compat.json_to_table(json)
	local s = state()
	s.answers = s.answers + 1
	if answer.conflict then
		-- Another game bumped it between our read and our write: add one to what is there now.
		s.conflicts = (s.conflicts or 0) + 1
		api.send_json("announce:kv_set", {
			key = "counter", value = (tonumber(answer.value) or 0) + 1, version = answer.version, ref = "bumped",
		})
		return
	end
	if not answer.ok then
		s.error = answer.error
		game.print("[announce] the counter is unavailable: " .. tostring(answer.error))
		return
	end
	s.error = nil
	if answer.ref == "bump" then
		-- Compare-and-set: stored only if nobody wrote since this read (version 0: not set yet).
		api.send_json("announce:kv_set", {
			key = "counter", value = (tonumber(answer.value) or 0) + 1, version = answer.version, ref = "bumped",
		})
	else
		s.counter = answer.value
		game.print("[announce] shared counter: " .. tostring(answer.value))
	end
end

local lib = {}

function lib.add_commands()
	commands.add_command("announce", "Shows a message on every server of the cluster.", function(command)
		announce.send(command.parameter or "")
	end)
	commands.add_command("count", "Adds one to the cluster's shared counter.", function()
		announce.bump()
	end)
end

return lib
