-- ping: the smallest plugin that uses the whole path. `/ping <text>` in one game (or
-- `/sc ping.send("text")` over RCON) reaches the controller, which hands it to every other game
-- of the cluster running the plugin and tells the sender how many got it.
local api = require("modules/clusterio/api")
local compat = require("modules/clusterio/compat")

ping = {}

local function state()
	local data = compat.script_data()
	data.ping = data.ping or { sent = 0, received = {}, pongs = {} }
	return data.ping
end

function ping.send(text)
	local s = state()
	s.sent = s.sent + 1
	api.send_json("ping:message", { text = text, number = s.sent })
end

-- Called by the host over RCON with a message from another game.
function ping.receive(json)
	local message = compat.json_to_table(json)
	table.insert(state().received, message)
	game.print("[" .. tostring(message.from) .. "] ping: " .. tostring(message.text))
end

-- Called by the host over RCON: the controller's answer to one of our pings.
function ping.pong(json)
	table.insert(state().pongs, compat.json_to_table(json))
end

-- For tests and admins: what this game has seen.
function ping.dump()
	rcon.print(compat.table_to_json(state()))
end

local lib = {}

function lib.add_commands()
	commands.add_command("ping", "Sends a ping to every server of the cluster.", function(command)
		ping.send(command.parameter or "")
	end)
end

return lib
