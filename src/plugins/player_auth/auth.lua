-- player_auth: log in to the cluster's web UI by proving, in game, that you are this player.
-- Written for clustorio. One command, /web-login:
--
-- typed by a player
--   /web-login          asks the host for a code to type into the web UI (the game-first flow)
--   /web-login CODE     confirms a code the web UI shows (both flows end here)
-- sent by the host over RCON (player_index is nil), never by players
--   /web-login open PLAYER URL CODE SECONDS   shows PLAYER the code to type into the web UI
--   /web-login done PLAYER USER               the browser is logged in as USER
--   /web-login error PLAYER MESSAGE…          shows PLAYER what went wrong
--
-- Game → host: IPC channel "player_auth", {type = "open_dialog", player} and
-- {type = "code", player, code}.
local api = require("modules/clusterio/api")

local auth = {}

local COLOR = { r = 0.6, g = 0.85, b = 1 }
local ERROR_COLOR = { r = 1, g = 0.5, b = 0.4 }

local function words(s)
	local out = {}
	for w in string.gmatch(s or "", "%S+") do
		out[#out + 1] = w
	end
	return out
end

local function tell(name, text, color)
	local player = game.get_player(name)
	if player ~= nil then
		player.print(text, color)
	end
end

-- What the host sends (RCON: no player).
local function from_host(parameter)
	local w = words(parameter)
	local verb, name = w[1], w[2]
	if name == nil then
		rcon.print("usage: /web-login open|done|error PLAYER …")
		return
	end
	if verb == "open" and w[3] ~= nil and w[4] ~= nil then
		local seconds = tonumber(w[5] or "")
		local within = seconds and (" within " .. math.floor(seconds) .. " seconds") or ""
		tell(name, "Web login: open " .. w[3] .. ", choose \"Log in with Factorio\", then \"I have a code from the game\", and enter " .. w[4] .. within .. ".", COLOR)
		rcon.print("ok")
	elseif verb == "done" and w[3] ~= nil then
		tell(name, "Web login: your browser is now logged in as " .. w[3] .. ".", COLOR)
		rcon.print("ok")
	elseif verb == "error" then
		local message = table.concat(w, " ", 3)
		tell(name, "Web login failed: " .. (message ~= "" and message or "unknown error"), ERROR_COLOR)
		rcon.print("ok")
	else
		rcon.print("usage: /web-login open|done|error PLAYER …")
	end
end

local function from_player(event)
	local player = game.get_player(event.player_index)
	if player == nil then
		return
	end
	local code = words(event.parameter)[1]
	if code == nil then
		api.send_json("player_auth", { type = "open_dialog", player = player.name })
		player.print("Web login: asking the cluster for a code…", COLOR)
	else
		api.send_json("player_auth", { type = "code", player = player.name, code = code })
		player.print("Web login: checking the code…", COLOR)
	end
end

function auth.add_commands()
	commands.add_command(
		"web-login",
		"Log in to the cluster's web UI: /web-login shows a code to type there; /web-login CODE confirms the code it shows.",
		function(event)
			if event.player_index == nil then
				from_host(event.parameter)
			else
				from_player(event)
			end
		end
	)
end

return auth
