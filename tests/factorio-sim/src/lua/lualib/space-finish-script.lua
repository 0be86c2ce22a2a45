-- Stand-in for the Space Age victory library: registers nothing.
return { events = {} }
