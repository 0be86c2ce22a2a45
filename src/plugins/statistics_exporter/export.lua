-- statistics_exporter: the game's statistics for Prometheus, read by the host over RCON.
-- Written for clustorio; the function name and JSON shape follow Clusterio's contract.
local compat = require("modules/clusterio/compat")

statistics_exporter = {}

local is_2 = helpers ~= nil

local function flow(stats)
	if stats == nil then
		return { input = {}, output = {} }
	end
	return { input = stats.input_counts or {}, output = stats.output_counts or {} }
end

local FORCE_STATISTICS = {
	"item_production_statistics",
	"fluid_production_statistics",
	"kill_count_statistics",
	"entity_build_count_statistics",
}

local function force_statistics(force, surface)
	local out = {}
	for _, name in ipairs(FORCE_STATISTICS) do
		if is_2 then
			out[name] = flow(force["get_" .. name](surface.index))
		else
			-- Factorio 1.1 keeps one set per force, for every surface.
			out[name] = flow(force[name])
		end
	end
	return out
end

-- RCON: `/sc statistics_exporter.export()` prints
-- {game_tick, player_count, surface_statistics = {[surface] = {game_flow_statistics =
-- {pollution_statistics = {input, output}}, force_flow_statistics = {[force] = {…}}}}}.
function statistics_exporter.export()
	local surfaces = {}
	for _, surface in pairs(game.surfaces) do
		if surfaces[surface.name] == nil then
		local pollution
		if is_2 then
			pollution = game.get_pollution_statistics(surface.index)
		else
			pollution = game.pollution_statistics
		end
		local forces = {}
		for _, force in pairs(game.forces) do
			forces[force.name] = force_statistics(force, surface)
		end
		surfaces[surface.name] = {
			game_flow_statistics = { pollution_statistics = flow(pollution) },
			force_flow_statistics = forces,
		}
		end
	end
	rcon.print(compat.table_to_json({
		game_tick = game.tick,
		player_count = #game.connected_players,
		surface_statistics = surfaces,
	}))
end

return {}
