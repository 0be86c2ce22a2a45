-- research_sync: technology progress and completion shared by every game of the cluster.
-- Written for clustorio; the RCON function names and JSON shapes follow Clusterio's contract.
--
-- What this game researches itself is counted per "run" (one start of the game, named by the
-- host): `counters[name] = {level, total}` grows only with this game's own progress, never with
-- progress applied from the controller. Reports carry the run's running total, so the controller
-- can take the highest total it has seen for (run, tech, level): a report that is repeated, or
-- re-sent from an older save after a crash, is never counted twice, and the last one before a stop
-- is sent again at the next start from the save.
local api = require("modules/clusterio/api")
local compat = require("modules/clusterio/compat")

research_sync = {}

local is_2 = helpers ~= nil

local function state()
	local data = compat.script_data()
	local s = data.research_sync
	if s == nil then
		s = { run = nil, counters = {}, ended = {}, seen = {}, applying = false }
		data.research_sync = s
	end
	return s
end

local function player_force()
	return game.forces["player"]
end

local function is_current(tech)
	local current = tech.force.current_research
	return current ~= nil and current.name == tech.name
end

local function progress_of(tech)
	if tech.researched then
		return 0
	end
	if is_current(tech) then
		return tech.force.research_progress or 0
	end
	if is_2 then
		return tech.saved_progress or 0
	end
	return tech.force.get_saved_technology_progress(tech.name) or 0
end

local function set_progress(tech, progress)
	if progress >= 1 then
		progress = 0.999999
	end
	if is_current(tech) then
		tech.force.research_progress = progress
	elseif is_2 then
		tech.saved_progress = progress
	else
		tech.force.set_saved_technology_progress(tech.name, progress)
	end
end

local function contribution(run, name, c, delta)
	local tech = player_force().technologies[name]
	return {
		name = name,
		level = c.level,
		contribution = delta or c.total,
		run = run,
		total = c.total,
		max_level = tech and tech.prototype.max_level or c.level,
	}
end

-- Adds what this game researched of `tech` since the last look to this run's counter and, once
-- the run is named, reports it.
local function sample(tech)
	local s = state()
	if tech.researched then
		s.seen[tech.name] = nil
		return
	end
	local p = progress_of(tech)
	local seen = s.seen[tech.name]
	if seen ~= nil and seen.level == tech.level and p > seen.progress then
		local delta = p - seen.progress
		local c = s.counters[tech.name]
		if c == nil or c.level ~= tech.level then
			c = { level = tech.level, total = 0 }
			s.counters[tech.name] = c
		end
		c.total = c.total + delta
		if s.run ~= nil then
			api.send_json("research_sync:contribution", contribution(s.run, tech.name, c, delta))
		end
	end
	s.seen[tech.name] = { level = tech.level, progress = p }
end

local function technology_list(exclude_own)
	local s = state()
	local list = {}
	for name, tech in pairs(player_force().technologies) do
		local progress = nil
		if not tech.researched then
			progress = progress_of(tech)
			local c = s.counters[name]
			if exclude_own and c ~= nil and c.level == tech.level then
				progress = math.max(0, progress - c.total)
			end
		end
		list[#list + 1] = {
			name = name,
			level = tech.level,
			progress = progress,
			researched = tech.researched,
			max_level = tech.prototype.max_level,
		}
	end
	return list
end

local function notify(tech, level)
	local text = "Researched [technology=" .. tech.name .. "]"
	if tech.prototype.max_level > 1 then
		text = text .. " level " .. level
	end
	game.print(text)
	game.play_sound({ path = "utility/research_completed" })
end

-- Marks every level of `tech` up to `level` researched. Returns whether anything changed.
local function apply_finished(tech, level, announce)
	if tech.researched or tech.level > level then
		return false
	end
	local s = state()
	-- Researching by script raises on_research_finished: that one is ours, not news to report.
	s.applying = true
	if level >= tech.prototype.max_level then
		tech.researched = true
	else
		tech.level = level + 1
	end
	s.applying = false
	s.counters[tech.name] = nil
	s.seen[tech.name] = { level = tech.level, progress = progress_of(tech) }
	if announce then
		notify(tech, level)
	end
	return true
end

-- RCON, from the host at every start: `begin_run("<run id>")`. Ends the run the save was in,
-- names the new one, and prints what the host passes on to the controller, in order:
-- {ended = [...], current = [...], technologies = [...]}, `technologies` as `dump_technologies`
-- but without this game's own progress not yet reported (the controller counts that once, from
-- `current`).
function research_sync.begin_run(run)
	local s = state()
	if s.run ~= nil then
		s.ended[s.run] = s.counters
		s.counters = {}
	end
	s.run = run
	local out = { ended = {}, current = {}, technologies = technology_list(true) }
	for r, counters in pairs(s.ended) do
		for name, c in pairs(counters) do
			out.ended[#out.ended + 1] = contribution(r, name, c)
		end
	end
	for name, c in pairs(s.counters) do
		out.current[#out.current + 1] = contribution(run, name, c)
	end
	rcon.print(compat.table_to_json(out))
end

-- RCON: the controller has stored these ended runs (`'["run", …]'`); forget them.
function research_sync.confirm_runs(json)
	local s = state()
	for _, r in ipairs(compat.json_to_table(json) or {}) do
		s.ended[r] = nil
	end
end

-- RCON: prints this game's technologies, `[{name, level, progress, researched, max_level}]`.
function research_sync.dump_technologies()
	rcon.print(compat.table_to_json(technology_list(false)))
end

-- RCON: the controller's table, `[[name, level, progress|null, researched], …]`. Only moves
-- forward: never un-researches, never lowers a level or progress.
function research_sync.sync_technologies(json)
	local s = state()
	local changed = 0
	for _, t in pairs(compat.json_to_table(json) or {}) do
		local name, level, progress, researched = t[1], t[2], t[3], t[4]
		local tech = type(name) == "string" and player_force().technologies[name] or nil
		if tech ~= nil and type(level) == "number" and not tech.researched then
			if researched == true then
				if apply_finished(tech, math.max(level, tech.prototype.max_level), false) then
					changed = changed + 1
				end
			else
				if level > tech.level and apply_finished(tech, level - 1, false) then
					changed = changed + 1
				end
				if tech.level == level and type(progress) == "number" and progress > progress_of(tech) then
					sample(tech)
					set_progress(tech, progress)
					s.seen[name] = { level = tech.level, progress = progress_of(tech) }
					changed = changed + 1
				end
			end
		end
	end
	if changed > 0 then
		game.print("Research synchronised with the cluster: " .. changed .. " technologies updated")
	end
end

-- RCON: cluster progress, `[{name, level, progress}]`.
function research_sync.update_progress(json)
	local s = state()
	for _, t in pairs(compat.json_to_table(json) or {}) do
		local tech = type(t.name) == "string" and player_force().technologies[t.name] or nil
		if tech ~= nil and not tech.researched and tech.level == t.level and type(t.progress) == "number" then
			sample(tech)
			if t.progress > progress_of(tech) then
				set_progress(tech, t.progress)
				s.seen[tech.name] = { level = tech.level, progress = progress_of(tech) }
			end
		end
	end
end

-- RCON: a technology finished somewhere in the cluster (`level` of an infinite one).
function research_sync.research_technology(name, level)
	local tech = player_force().technologies[name]
	if tech ~= nil and type(level) == "number" then
		apply_finished(tech, level, true)
	end
end

local lib = { events = {}, on_nth_tick = {} }

-- Every start: count what the save researched since its last report into the run it was in,
-- then end that run; until the host names the next one, progress is kept unreported.
lib.events[api.events.on_server_startup] = function()
	local s = state()
	for _, tech in pairs(player_force().technologies) do
		sample(tech)
	end
	if s.run ~= nil then
		s.ended[s.run] = s.counters
		s.counters = {}
		s.run = nil
	end
end

lib.events[defines.events.on_research_started] = function(event)
	if event.last_research ~= nil and event.last_research.force.name == "player" then
		sample(event.last_research)
	end
	if event.research.force.name == "player" then
		sample(event.research)
	end
end

lib.events[defines.events.on_research_finished] = function(event)
	local tech = event.research
	local s = state()
	if s.applying or tech.force.name ~= "player" then
		return
	end
	local level = tech.level
	if not tech.researched then
		level = level - 1
	end
	s.counters[tech.name] = nil
	s.seen[tech.name] = { level = tech.level, progress = progress_of(tech) }
	api.send_json("research_sync:finished", {
		name = tech.name,
		level = level,
		researched = tech.researched,
		max_level = tech.prototype.max_level,
	})
end

lib.on_nth_tick[60] = function()
	local current = player_force().current_research
	if current ~= nil then
		sample(current)
	end
end

return lib
