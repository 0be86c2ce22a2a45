//! Driving a Factorio headless server: command line, version, log parsing, RCON, saves.
