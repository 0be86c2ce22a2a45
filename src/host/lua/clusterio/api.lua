-- clustorio core module: the public API other modules use, `require("modules/clusterio/api")`.
-- Written for clustorio; the names follow the contract Clusterio's modules expect.
local compat = require("modules/clusterio/compat")

local api = {
	events = {
		-- Raised with {instance_id, instance_name} when the host tells the game who it is.
		on_instance_updated = script.generate_event_name(),
		-- Raised on the first tick after a (re)patched save starts: once per server start.
		on_server_startup = script.generate_event_name(),
	},
}

local function cluster_state()
	local data = compat.script_data()
	return data and data.clusterio or {}
end

function api.get_instance_id()
	return cluster_state().instance_id
end

function api.get_instance_name()
	return cluster_state().instance_name
end

-- Control bytes, '?' and '\' cannot appear raw in a channel name on the wire.
local function escape_channel(channel)
	return (string.gsub(channel, "[%c?\\]", function(c)
		return string.format("\\x%02x", string.byte(c))
	end))
end

-- Payloads this long go through a file in script-output/ instead of stdout.
local INLINE_LIMIT = 4000

function api.next_file_no()
	local data = compat.script_data()
	data.clusterio_file_no = (data.clusterio_file_no or 0) + 1
	return data.clusterio_file_no
end

-- Sends `data` (a table) to the host on `channel` (by convention "<plugin>:<name>").
function api.send_json(channel, data)
	local text = compat.table_to_json(data)
	local prefix = "\f$ipc:" .. escape_channel(channel)
	if #text < INLINE_LIMIT then
		print(prefix .. "?j" .. text)
	else
		local name = "clst_" .. api.next_file_no() .. ".json"
		compat.write_file(name, text)
		print(prefix .. "?f" .. name)
	end
end

return api
