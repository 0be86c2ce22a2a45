//! What an external plugin says about itself in its hello, and the checks it must pass.

use crate::link::ErrorBody;
use crate::plugins::checks;
pub use crate::plugins::checks::FieldDecl;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Events an external plugin can subscribe to.
pub const EVENTS: &[&str] = &["chat", "player_join", "player_leave", "instance_status"];
/// At most this many entries in each list of a declaration.
const MAX_ITEMS: usize = 64;
/// Lua files uploaded with a declaration, all together, at most.
pub const MAX_LUA_BYTES: usize = 1024 * 1024;
/// Lua files, at most.
const MAX_LUA_FILES: usize = 32;

/// A request users may send to the plugin (`<name>.<what>`) and the permission it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDecl {
    pub name: String,
    pub permission: String,
}

/// A permission the plugin adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionDecl {
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
}

/// Lua module files patched into saves (`modules/<name>/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuaDecl {
    /// event_handler libraries, in order.
    #[serde(default)]
    pub load: Vec<String>,
    #[serde(default)]
    pub require: Vec<String>,
    /// Path in the module → contents (text).
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, String>,
}

/// The `plugin` object of a plugin's hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    /// The plugin API it was written against ([`super::PLUGIN_API_VERSION`]).
    pub api: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<PermissionDecl>,
    #[serde(default)]
    pub requests: Vec<RequestDecl>,
    #[serde(default)]
    pub controller_config: Vec<FieldDecl>,
    #[serde(default)]
    pub instance_config: Vec<FieldDecl>,
    /// IPC channels it owns: exact names, or prefixes ending in `:` (`<name>:` owns them all).
    #[serde(default)]
    pub ipc_channels: Vec<String>,
    /// Channels whose messages are kept for it while it is away.
    #[serde(default)]
    pub durable: Vec<String>,
    /// Events it receives (see [`EVENTS`]).
    #[serde(default)]
    pub events: Vec<String>,
    /// Lua functions `instance_send` may call (`<name>_on_message`, `my_plugin.handle`).
    #[serde(default)]
    pub lua_functions: Vec<String>,
    #[serde(default)]
    pub lua: Option<LuaDecl>,
}

fn refuse(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new("bad_declaration", message)
}

/// Why `name` cannot be a plugin's name, if it cannot (the rule all plugins share:
/// [`checks::name`]).
pub fn name_problem(name: &str) -> Option<String> {
    checks::name(name).err()
}

/// Does a channel pattern (exact, or a prefix ending in `:`) cover `channel`?
pub fn pattern_covers(pattern: &str, channel: &str) -> bool {
    if pattern.ends_with(':') {
        channel.starts_with(pattern) && channel.len() > pattern.len()
    } else {
        pattern == channel
    }
}

/// Could two channel patterns name the same channel?
fn patterns_overlap(a: &str, b: &str) -> bool {
    match (a.ends_with(':'), b.ends_with(':')) {
        (true, true) => a.starts_with(b) || b.starts_with(a),
        (true, false) => pattern_covers(a, b),
        (false, true) => pattern_covers(b, a),
        (false, false) => a == b,
    }
}

fn lua_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.split('.').all(|part| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

impl Declaration {
    /// Parses the `plugin` object of a hello.
    pub fn parse(value: &Value) -> Result<Declaration, ErrorBody> {
        if value.is_null() {
            return Err(refuse(
                "a plugin hello needs a \"plugin\" object (the declaration; see docs/plugins.md)",
            ));
        }
        serde_json::from_value(value.clone())
            .map_err(|e| refuse(format!("the plugin declaration is malformed: {e}")))
    }

    /// Everything except the API version and ownership against others (checked by the caller).
    pub fn check(&self, token_name: &str) -> Result<(), ErrorBody> {
        if self.name != token_name {
            return Err(ErrorBody::new(
                "name_mismatch",
                format!(
                    "the declaration names plugin \"{}\" but the token belongs to plugin \"{token_name}\"",
                    self.name
                ),
            ));
        }
        if let Some(p) = name_problem(&self.name) {
            return Err(refuse(p));
        }
        let lists = [
            ("permissions", self.permissions.len()),
            ("requests", self.requests.len()),
            ("controller_config", self.controller_config.len()),
            ("instance_config", self.instance_config.len()),
            ("ipc_channels", self.ipc_channels.len()),
            ("durable", self.durable.len()),
            ("events", self.events.len()),
            ("lua_functions", self.lua_functions.len()),
        ];
        for (what, n) in lists {
            if n > MAX_ITEMS {
                return Err(refuse(format!(
                    "{what} has {n} entries; at most {MAX_ITEMS} are allowed"
                )));
            }
        }
        let own = format!("{}.", self.name);
        for p in &self.permissions {
            if !p.name.starts_with(&own) || p.name.len() == own.len() || p.name.len() > 100 {
                return Err(refuse(format!(
                    "permission \"{}\" must be named {own}<something>",
                    p.name
                )));
            }
        }
        for r in &self.requests {
            if !r.name.starts_with(&own) || r.name.len() == own.len() || r.name.len() > 100 {
                return Err(refuse(format!(
                    "request \"{}\" must be named {own}<something>",
                    r.name
                )));
            }
            if !self.permissions.iter().any(|p| p.name == r.permission) {
                return Err(refuse(format!(
                    "request \"{}\" needs permission \"{}\", which the declaration does not add",
                    r.name, r.permission
                )));
            }
        }
        let chan = format!("{}:", self.name);
        for c in &self.ipc_channels {
            if !c.starts_with(&chan) || c.len() > 100 || c.chars().any(char::is_control) {
                return Err(refuse(format!(
                    "IPC channel \"{c}\" must start with \"{chan}\" (the plugin's own prefix)"
                )));
            }
        }
        for d in &self.durable {
            if !self.ipc_channels.iter().any(|c| patterns_overlap(c, d)) {
                return Err(refuse(format!(
                    "durable channel \"{d}\" is not one of the declared ipc_channels"
                )));
            }
        }
        for e in &self.events {
            if !EVENTS.contains(&e.as_str()) {
                return Err(refuse(format!(
                    "unknown event \"{e}\"; plugins can subscribe to {}",
                    EVENTS.join(", ")
                )));
            }
        }
        for f in &self.lua_functions {
            if !lua_identifier(f) {
                return Err(refuse(format!(
                    "Lua function \"{f}\" is not a Lua name (letters, digits, _ and dots)"
                )));
            }
        }
        for (kind, fields) in [
            ("controller", &self.controller_config),
            ("instance", &self.instance_config),
        ] {
            for f in fields {
                checks::config_field(&self.name, f).map_err(|m| refuse(format!("{kind} {m}")))?;
            }
        }
        if let Some(lua) = &self.lua {
            if lua.files.len() > MAX_LUA_FILES {
                return Err(ErrorBody::new(
                    "too_large",
                    format!("{} Lua files; at most {MAX_LUA_FILES}", lua.files.len()),
                ));
            }
            let total: usize = lua.files.iter().map(|(k, v)| k.len() + v.len()).sum();
            if total > MAX_LUA_BYTES {
                return Err(ErrorBody::new(
                    "too_large",
                    format!("the Lua files are {total} bytes; at most {MAX_LUA_BYTES} are allowed"),
                ));
            }
            // The same checks as every Lua bundle (file names, sizes, load/require).
            crate::controller::plugin_lua::bundle_from_files(
                &self.name,
                &self.version,
                lua.load.clone(),
                lua.require.clone(),
                lua.files
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect(),
            )
            .map_err(|e| refuse(format!("Lua files not allowed: {e}")))?;
        }
        checks::version(&self.version).map_err(refuse)?;
        Ok(())
    }

    /// Does this plugin own `channel`?
    pub fn owns_channel(&self, channel: &str) -> bool {
        self.ipc_channels.iter().any(|c| pattern_covers(c, channel))
    }

    pub fn is_durable(&self, channel: &str) -> bool {
        self.durable.iter().any(|c| pattern_covers(c, channel))
    }

    pub fn subscribes(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// A channel this declaration claims that `other` also claims, if any.
    pub fn channel_clash(&self, other: &Declaration) -> Option<String> {
        self.ipc_channels.iter().find_map(|a| {
            other
                .ipc_channels
                .iter()
                .find(|b| patterns_overlap(a, b))
                .map(|_| a.clone())
        })
    }

    /// A channel a built-in plugin owns, if this declaration claims one.
    pub fn builtin_clash(&self) -> Option<(String, &'static str)> {
        for c in &self.ipc_channels {
            for b in crate::plugins::builtins() {
                let probe = if c.ends_with(':') {
                    format!("{c}x")
                } else {
                    c.clone()
                };
                if b.info.owns_channel(&probe) {
                    return Some((c.clone(), b.info.name));
                }
            }
        }
        None
    }

    /// Is the plugin switched on for an instance with this config (`<name>.load_plugin`, and not
    /// listed in `lua_plugins.disabled`)?
    pub fn enabled_for(&self, instance_config: &Value) -> bool {
        crate::controller::plugin_lua::enabled_for(instance_config, &self.name)
    }

    /// Its settings for the schemas (leaked: a schema holds `'static` fields; made when the
    /// controller starts and when a redeclaration changes the fields).
    pub fn settings(&self) -> crate::config::PluginSettings {
        let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
        let mut instance: Vec<crate::config::schema::Field> =
            vec![crate::plugins::load_plugin_field(
                leak(&format!("{}.load_plugin", self.name)),
                leak(&format!("Run the {} plugin", self.name)),
            )];
        instance.extend(
            self.instance_config
                .iter()
                .filter_map(|f| checks::config_field(&self.name, f).ok()),
        );
        let controller: Vec<crate::config::schema::Field> = self
            .controller_config
            .iter()
            .filter_map(|f| checks::config_field(&self.name, f).ok())
            .collect();
        crate::config::PluginSettings {
            instance: Box::leak(instance.into_boxed_slice()),
            controller: Box::leak(controller.into_boxed_slice()),
            host: &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decl(v: Value) -> Result<Declaration, ErrorBody> {
        let d = Declaration::parse(&v)?;
        d.check("bridge")?;
        Ok(d)
    }

    fn base() -> Value {
        json!({"api": 1, "name": "bridge", "version": "1.0.0",
               "ipc_channels": ["bridge:"], "durable": ["bridge:durable"],
               "permissions": [{"name": "bridge.use"}],
               "requests": [{"name": "bridge.say", "permission": "bridge.use"}],
               "instance_config": [{"name": "bridge.prefix", "type": "string", "default": "[d]"}],
               "events": ["chat"]})
    }

    #[test]
    fn a_good_declaration_passes() {
        let d = decl(base()).unwrap();
        assert!(d.owns_channel("bridge:x"));
        assert!(!d.owns_channel("bridge:"));
        assert!(!d.owns_channel("bridgex:y"));
        assert!(d.is_durable("bridge:durable"));
        assert!(!d.is_durable("bridge:chat"));
        assert_eq!(d.settings().instance.len(), 2);
    }

    #[test]
    fn bad_declarations_say_what_is_wrong() {
        let cases: &[(&str, Value, &str)] = &[
            ("/name", json!("other"), "token belongs"),
            (
                "/ipc_channels",
                json!(["global_chat:x"]),
                "must start with \"bridge:\"",
            ),
            (
                "/permissions",
                json!([{"name": "core.admin"}]),
                "bridge.<something>",
            ),
            ("/durable", json!(["bridge2:x"]), "not one of the declared"),
            ("/events", json!(["teleport"]), "unknown event"),
            ("/lua_functions", json!(["os.execute()"]), "not a Lua name"),
            (
                "/instance_config",
                json!([{"name": "bridge.x", "type": "blob"}]),
                "unknown type",
            ),
            ("/version", json!(""), "version"),
            (
                "/instance_config",
                json!([{"name": "bridge.n", "type": "integer", "min": 5, "max": 1}]),
                "not above max",
            ),
            (
                "/lua",
                json!({"files": {"../evil.lua": "x"}}),
                "not allowed",
            ),
            ("/lua", json!({"files": {"/abs.lua": "x"}}), "not allowed"),
            (
                "/lua",
                json!({"load": ["main.lua"], "files": {"a.lua": "x"}}),
                "not in the bundle",
            ),
            ("/extra", json!(1), "malformed"),
        ];
        for (path, value, want) in cases {
            let mut v = base();
            let key = &path[1..];
            v[key] = value.clone();
            let err = decl(v).unwrap_err();
            assert!(err.message.contains(want), "{path}: {}", err.message);
        }
        let mut big = base();
        big["lua"] = json!({"files": {"a.lua": "x".repeat(MAX_LUA_BYTES + 1)}});
        assert_eq!(decl(big).unwrap_err().code, "too_large");
        assert!(Declaration::parse(&Value::Null).is_err());
    }

    #[test]
    fn clashes_are_found() {
        let a = decl(base()).unwrap();
        let mut b = a.clone();
        b.ipc_channels = vec!["bridge:durable".into()];
        assert!(a.channel_clash(&b).is_some());
        b.ipc_channels = vec!["other:".into()];
        assert!(a.channel_clash(&b).is_none());
        assert!(name_problem("global_chat").is_some());
        assert!(name_problem("core").is_some());
        assert!(name_problem("Bad").is_some());
        assert!(name_problem("bridge").is_none());
    }
}
