-- clustorio core module: one API over the Factorio versions the cluster runs (1.1 and 2.x).
-- Written for clustorio; the names follow the contract Clusterio's modules expect.
local compat = {}

-- Factorio 2.0 renamed `global` to `storage` and moved several game.* helpers to `helpers`.
function compat.script_data()
	if storage ~= nil then
		return storage
	end
	return global
end

local function json_helpers()
	if helpers ~= nil and helpers.table_to_json ~= nil then
		return helpers
	end
	return game
end

function compat.table_to_json(value)
	return json_helpers().table_to_json(value)
end

function compat.json_to_table(text)
	return json_helpers().json_to_table(text)
end

-- Writes a file into script-output/ for the server only (player index 0).
function compat.write_file(name, data)
	if helpers ~= nil and helpers.write_file ~= nil then
		helpers.write_file(name, data, false, 0)
	else
		game.write_file(name, data, false, 0)
	end
end

return compat
