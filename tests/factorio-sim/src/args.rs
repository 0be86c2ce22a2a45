//! The real command line (research/factorio.md §1.2, §8.2): long flags with a separate value or
//! `--flag=value`, bare booleans that may take an explicit `true`/`false`, the short aliases, and the
//! real error for an unknown option.

use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq)]
enum Arity {
    /// Takes a value.
    Value,
    /// Bare flag.
    Flag,
    /// Bare means true; a following `true`/`false` is consumed.
    OptBool,
}

const FLAGS: &[(&str, Arity)] = &[
    ("help", Arity::Flag),
    ("version", Arity::Flag),
    ("verbose", Arity::Flag),
    ("config", Arity::Value),
    ("no-log-rotation", Arity::Flag),
    ("mod-directory", Arity::Value),
    ("executable-path", Arity::Value),
    ("create", Arity::Value),
    ("map-gen-settings", Arity::Value),
    ("map-gen-seed", Arity::Value),
    ("map-settings", Arity::Value),
    ("preset", Arity::Value),
    ("map2scenario", Arity::Value),
    ("scenario2map", Arity::Value),
    ("start-server", Arity::Value),
    ("start-server-load-scenario", Arity::Value),
    ("start-server-load-latest", Arity::Flag),
    ("port", Arity::Value),
    ("bind", Arity::Value),
    ("rcon-port", Arity::Value),
    ("rcon-bind", Arity::Value),
    ("rcon-password", Arity::Value),
    ("server-settings", Arity::Value),
    ("server-whitelist", Arity::Value),
    ("use-server-whitelist", Arity::OptBool),
    ("server-banlist", Arity::Value),
    ("server-adminlist", Arity::Value),
    ("use-authserver-bans", Arity::OptBool),
    ("console-log", Arity::Value),
    ("server-id", Arity::Value),
    ("sync-mods", Arity::Value),
    ("host", Arity::Value),
    ("benchmark", Arity::Value),
    ("dump-data", Arity::Flag),
    ("load-game", Arity::Value),
    ("mp-connect", Arity::Value),
    ("generate-map-preview", Arity::Value),
];

const SHORT: &[(&str, &str)] = &[
    ("h", "help"),
    ("v", "verbose"),
    ("c", "config"),
    ("s", "map2scenario"),
    ("m", "scenario2map"),
];

pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
}

/// Err carries the unknown option's name (without dashes) or a message.
pub enum ArgError {
    Unknown(String),
    MissingValue(String),
}

pub fn parse(argv: &[String]) -> Result<Args, ArgError> {
    let mut values = HashMap::new();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        let (name, inline) = if let Some(rest) = a.strip_prefix("--") {
            match rest.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (rest.to_string(), None),
            }
        } else if let Some(rest) = a.strip_prefix('-').filter(|r| !r.is_empty()) {
            match SHORT.iter().find(|(s, _)| *s == rest) {
                Some((_, long)) => (long.to_string(), None),
                None => return Err(ArgError::Unknown(rest.to_string())),
            }
        } else {
            // Positional arguments are not accepted by the real server either.
            return Err(ArgError::Unknown(a.clone()));
        };
        let Some((_, arity)) = FLAGS.iter().find(|(n, _)| *n == name) else {
            return Err(ArgError::Unknown(name));
        };
        let value = match (arity, inline) {
            (_, Some(v)) => v,
            (Arity::Flag, None) => "true".to_string(),
            (Arity::OptBool, None) => match argv.get(i).map(String::as_str) {
                Some(v @ ("true" | "false")) => {
                    i += 1;
                    v.to_string()
                }
                _ => "true".to_string(),
            },
            (Arity::Value, None) => match argv.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(ArgError::MissingValue(name)),
            },
        };
        values.insert(name, value);
    }
    Ok(Args { values })
}

pub const HELP: &str = "\
Usage:
  factorio [OPTION...]

 General options:
  -h, --help                    display help
      --version                 show version information
  -v, --verbose                 enable verbose logging
  -c, --config PATH             config file to use
      --no-log-rotation         don't rotate log file
      --mod-directory PATH      Mod directory to use
      --check-unused-prototype-data
                                Print a warning for all prototype values that
                                were not accessed.
      --executable-path PATH    Override autodetected __PATH__executable__.
                                Usually not needed except on very weird
                                systems.

 Running options:
  -s, --map2scenario arg        map to scenario conversion
  -m, --scenario2map arg        scenario to map conversion
      --apply-update arg        immediately apply update package
      --create FILE             create a new map
      --map-gen-settings FILE   Map generation settings for use with
                                --create, --start-server-load-scenario or
                                --generate-map-preview. See
                                data/map-gen-settings.example.json
      --map-gen-seed SEED       Map generation seed for use with --create,
                                --start-server-load-scenario or
                                --generate-map-preview. Will override seed
                                specified in map gen settings
      --map-settings FILE       Map settings for use with --create or
                                --start-server-load-scenario. See
                                data/map-settings.example.json
      --preset arg              Name of the map generation preset to be used.
      --generate-map-preview FILE
                                Generate preview images of the map
      --benchmark FILE          load save and run benchmark
      --dump-data               Dumps data.raw as JSON to the script output
                                folder and exits.

 Server options:
      --start-server FILE       start a multiplayer server
      --start-server-load-scenario [MOD/]NAME
                                start a multiplayer server and load the
                                specified scenario. The scenario is looked for
                                inside the given mod. If no mod is given, it is
                                looked for in the top-level scenarios
                                directory.
      --start-server-load-latest
                                start a multiplayer server and load the latest
                                available save
      --port N                  network port to use
      --bind ADDRESS[:PORT]     IP address (and optionally port) to bind to
      --rcon-port N             Port to use for RCON
      --rcon-bind ADDRESS:PORT  IP address and port to use for RCON
      --rcon-password PASSWORD  Password for RCON
      --server-settings FILE    Path to file with server settings. See
                                data/server-settings.example.json
      --use-server-whitelist    If the whitelist should be used.
      --server-whitelist FILE   Path to file with server whitelist.
      --server-banlist FILE     Path to file with server banlist.
      --server-adminlist FILE   Path to file with server adminlist.
      --console-log FILE        Path to file where a copy of the server's log
                                will be stored
      --server-id FILE          Path where server ID will be stored or read
                                from
      --use-authserver-bans     Verify that connecting players are not banned
                                from multiplayer and inform Factorio.com about
                                ban/unban commands.
";
