-- Stand-in for the rocket-silo victory library: registers nothing.
return { events = {} }
