-- Stand-in for the freeplay scenario library: nothing happens in a simulated world.
local freeplay = { events = {} }

local state = { skip_intro = false, created_items = {}, respawn_items = {} }

function freeplay.add_remote_interface()
  if remote.interfaces["freeplay"] then
    return
  end
  remote.add_interface("freeplay", {
    get_created_items = function() return state.created_items end,
    set_created_items = function(t) state.created_items = t end,
    get_respawn_items = function() return state.respawn_items end,
    set_respawn_items = function(t) state.respawn_items = t end,
    set_skip_intro = function(b) state.skip_intro = b end,
    get_skip_intro = function() return state.skip_intro end,
    set_disable_crashsite = function() end,
    get_disable_crashsite = function() return true end,
  })
end

return freeplay
