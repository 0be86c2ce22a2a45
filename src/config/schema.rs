//! The settings schema: every setting of an instance, the controller and a host is one [`Field`],
//! declared once (in `fields.rs`, or by a plugin) with its type, default, text, secrecy,
//! restart rule and permissions. That one declaration drives validation of every writer (REST,
//! link, ctl, web UI), JSON merge patches, secret masking, the environment variables the
//! entrypoint reads, `GET /api/v1/config/schema`, the web UI's forms and the README's tables.
//!
//! Fields are `const`-constructible, so a plugin declares its own once, as a constant, and the
//! registry hands it to [`super::Schemas::new`] next to the core's (one line per plugin):
//!
//! ```
//! use clustorio::config::schema::{Default, Field, Kind};
//! use clustorio::config::{PluginSettings, Schemas};
//! pub const SETTINGS: PluginSettings = PluginSettings {
//!     instance: &[Field::new("research_sync.enabled", Kind::Bool, Default::Bool(true))
//!         .title("Research sync")
//!         .about("Share researched technologies between the cluster's instances.")
//!         .restart()],
//!     ..PluginSettings::NONE
//! };
//! let schemas = Schemas::new(&[SETTINGS]);
//! assert!(schemas.instance.field("research_sync.enabled").is_some());
//! assert!(schemas.instance.field("server_settings.max_players").is_some());
//! ```
//!
//! Dotted names nest: `server_settings.max_players` is stored as
//! `{"server_settings": {"max_players": …}}`. Stored configs hold only what was set; a value
//! that is absent (or patched to `null`) is the field's default.

use serde_json::{Map, Value, json};

/// A string rule: a check and the phrase that completes "NAME must be …".
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub check: fn(&str) -> bool,
    pub says: &'static str,
}

/// The type of a setting, with the limits that make a value valid.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// A whole number in `min..=max`.
    Integer {
        min: i64,
        max: i64,
    },
    /// Any number in `min..=max` (minutes as fractions, say).
    Number {
        min: f64,
        max: f64,
    },
    /// A UDP/TCP port, 1–65535.
    Port,
    /// Text of at most `max_len` characters, optionally obeying a rule.
    Text {
        max_len: usize,
        rule: Option<Rule>,
    },
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// A list of strings, each obeying the rule if there is one.
    List {
        rule: Option<Rule>,
    },
}

/// A field's default. `Null` means "not set": the program decides (e.g. a port chosen at start).
#[derive(Debug, Clone, Copy)]
pub enum Default {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(&'static str),
    List(&'static [&'static str]),
}

impl Default {
    pub fn to_value(self) -> Value {
        match self {
            Default::Null => Value::Null,
            Default::Bool(b) => json!(b),
            Default::Int(n) => json!(n),
            Default::Num(n) => json!(n),
            Default::Str(s) => json!(s),
            Default::List(l) => json!(l),
        }
    }
}

/// One setting, declared once.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Dotted name, e.g. `server_settings.max_players`.
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    pub title: &'static str,
    /// One line: what it does.
    pub description: &'static str,
    /// Where a form shows it: "Server", "Game", "Backups" or "Advanced".
    pub section: &'static str,
    /// Never shown in lists, plain reads, logs or audit rows; readers see whether it is set.
    pub secret: bool,
    /// A change applies at the next start (of the instance, controller or host).
    pub restart_required: bool,
    /// Permissions to read and to change it; empty = the schema's.
    pub read: &'static str,
    pub write: &'static str,
    /// Environment variables that set it (controller and host settings), the first one winning.
    pub env: &'static [&'static str],
}

impl Field {
    pub const fn new(name: &'static str, kind: Kind, default: Default) -> Field {
        Field {
            name,
            kind,
            default,
            title: "",
            description: "",
            section: "Advanced",
            secret: false,
            restart_required: false,
            read: "",
            write: "",
            env: &[],
        }
    }
    pub const fn title(mut self, title: &'static str) -> Field {
        self.title = title;
        self
    }
    pub const fn about(mut self, description: &'static str) -> Field {
        self.description = description;
        self
    }
    pub const fn section(mut self, section: &'static str) -> Field {
        self.section = section;
        self
    }
    pub const fn secret(mut self) -> Field {
        self.secret = true;
        self
    }
    pub const fn restart(mut self) -> Field {
        self.restart_required = true;
        self
    }
    pub const fn permissions(mut self, read: &'static str, write: &'static str) -> Field {
        self.read = read;
        self.write = write;
        self
    }
    pub const fn env(mut self, names: &'static [&'static str]) -> Field {
        self.env = names;
        self
    }

    /// The type's name in the schema JSON.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "bool",
            Kind::Integer { .. } => "integer",
            Kind::Number { .. } => "number",
            Kind::Port => "port",
            Kind::Text { .. } => "string",
            Kind::Enum(_) => "enum",
            Kind::List { .. } => "list",
        }
    }

    /// The rule a value must obey, completing "NAME must be …".
    pub fn rule(&self) -> String {
        match self.kind {
            Kind::Bool => "true or false".into(),
            Kind::Integer { min, max } => format!("an integer from {min} to {max}"),
            Kind::Number { min, max } => format!("a number from {min} to {max}"),
            Kind::Port => "a port number from 1 to 65535".into(),
            Kind::Text { max_len, rule } => match rule {
                Some(r) => format!("{} (at most {max_len} characters)", r.says),
                None => format!("a string of at most {max_len} characters"),
            },
            Kind::Enum(options) => format!("one of {}", quoted(options)),
            Kind::List { rule } => match rule {
                Some(r) => format!("a list of {}", r.says),
                None => "a list of strings".into(),
            },
        }
    }

    /// Whether `value` is valid (null is handled by the caller: it means "default").
    pub fn accepts(&self, value: &Value) -> bool {
        match (self.kind, value) {
            (Kind::Bool, Value::Bool(_)) => true,
            (Kind::Integer { min, max }, Value::Number(n)) => {
                n.as_i64().is_some_and(|n| (min..=max).contains(&n))
            }
            (Kind::Number { min, max }, Value::Number(n)) => {
                n.as_f64().is_some_and(|n| n >= min && n <= max)
            }
            (Kind::Port, Value::Number(n)) => n.as_u64().is_some_and(|n| (1..=65535).contains(&n)),
            (Kind::Text { max_len, rule }, Value::String(s)) => {
                s.chars().count() <= max_len && rule.is_none_or(|r| (r.check)(s))
            }
            (Kind::Enum(options), Value::String(s)) => options.contains(&s.as_str()),
            (Kind::List { rule }, Value::Array(items)) => items.iter().all(|i| {
                i.as_str()
                    .is_some_and(|s| rule.is_none_or(|r| (r.check)(s)))
            }),
            _ => false,
        }
    }

    /// Checks `value`; the refusal names the field and the rule.
    pub fn check(&self, value: &Value) -> Result<(), Refusal> {
        if self.accepts(value) {
            Ok(())
        } else {
            Err(Refusal::new(
                self.name,
                format!("{} must be {}", self.name, self.rule()),
            ))
        }
    }

    /// Text (an environment variable, a ctl argument) → a value of this field's type.
    pub fn parse(&self, text: &str) -> Result<Value, Refusal> {
        let value = parse_as(self.type_name(), text).ok_or_else(|| {
            Refusal::new(self.name, format!("{} must be {}", self.name, self.rule()))
        })?;
        self.check(&value)?;
        Ok(value)
    }

    /// The field as `GET /api/v1/config/schema` shows it.
    pub fn to_json(&self, schema: &Schema) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.type_name(),
            "default": self.default.to_value(),
            "title": self.title,
            "description": self.description,
            "section": self.section,
            "secret": self.secret,
            "restart_required": self.restart_required,
            "read_permission": schema.read_permission(self),
            "write_permission": schema.write_permission(self),
            "rule": self.rule(),
        });
        match self.kind {
            Kind::Integer { min, max } => {
                v["min"] = json!(min);
                v["max"] = json!(max);
            }
            Kind::Number { min, max } => {
                v["min"] = json!(min);
                v["max"] = json!(max);
            }
            Kind::Port => {
                v["min"] = json!(1);
                v["max"] = json!(65535);
            }
            Kind::Text { max_len, .. } => v["max_length"] = json!(max_len),
            Kind::Enum(options) => v["options"] = json!(options),
            Kind::List { .. } => {}
            Kind::Bool => {}
        }
        if !self.env.is_empty() {
            v["env"] = json!(self.env);
        }
        v
    }
}

/// Text → a JSON value of the named type (`bool`, `integer`, `number`, `port`, `list`, else a
/// string), or `None` when it does not parse. Shared by the entrypoint's environment and ctl.
pub fn parse_as(type_name: &str, text: &str) -> Option<Value> {
    let t = text.trim();
    match type_name {
        "bool" => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(json!(true)),
            "false" | "no" | "off" | "0" => Some(json!(false)),
            _ => None,
        },
        "integer" | "port" => t.parse::<i64>().ok().map(Value::from),
        "number" => t
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Value::from),
        "list" => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Array(_)) => Some(v),
            _ => Some(json!(super::split_list(t))),
        },
        _ => Some(json!(text)),
    }
}

fn quoted(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value refused: which field, and a message naming it and the rule it broke.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

impl Refusal {
    pub fn new(field: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// The merged list of fields of one kind of config (the core's plus any plugin's).
#[derive(Debug, Clone)]
pub struct Schema {
    fields: Vec<&'static Field>,
    read: &'static str,
    write: &'static str,
}

/// The largest stored config (instance, controller, host), as JSON: it must fit in one link
/// message at the default limit ([`crate::link::DEFAULT_MAX_FRAME`]) with room to spare.
pub const MAX_CONFIG_BYTES: usize = 2 << 20;

/// What a secret's reader sees instead of its value.
pub const SECRET_SET: &str = "set";
pub const SECRET_NOT_SET: &str = "not set";

impl Schema {
    /// `read`/`write`: the permissions of fields that name none. Later slices may not reuse a
    /// name of an earlier one (a unit test checks the core's; a plugin's test checks its own).
    pub fn new(read: &'static str, write: &'static str, parts: &[&'static [Field]]) -> Schema {
        let mut fields: Vec<&'static Field> = Vec::new();
        for part in parts {
            for f in part.iter() {
                if !fields.iter().any(|g| g.name == f.name) {
                    fields.push(f);
                }
            }
        }
        Schema {
            fields,
            read,
            write,
        }
    }

    pub fn fields(&self) -> impl Iterator<Item = &'static Field> + '_ {
        self.fields.iter().copied()
    }

    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().copied().find(|f| f.name == name)
    }

    pub fn read_permission(&self, f: &Field) -> &'static str {
        if f.read.is_empty() { self.read } else { f.read }
    }

    pub fn write_permission(&self, f: &Field) -> &'static str {
        if f.write.is_empty() {
            self.write
        } else {
            f.write
        }
    }

    /// Whether `prefix` names a group of fields (`server_settings`, `server_settings.visibility`).
    fn is_group(&self, prefix: &str) -> bool {
        self.fields.iter().any(|f| {
            f.name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Every default, nested (fields defaulting to "not set" are left out).
    pub fn defaults(&self) -> Value {
        let mut out = Value::Object(Map::new());
        for f in &self.fields {
            let v = f.default.to_value();
            if !v.is_null() {
                set_path(&mut out, f.name, v);
            }
        }
        out
    }

    /// The effective config: the defaults with the stored values over them.
    pub fn resolve(&self, stored: &Value) -> Value {
        let mut out = self.defaults();
        merge(&mut out, stored);
        out
    }

    /// Checks a JSON merge patch (or an initial config): every key a known field or group, every
    /// value of the field's type; `null` is allowed (it means "back to the default").
    pub fn check_patch(&self, patch: &Value) -> Result<(), Refusal> {
        let Value::Object(map) = patch else {
            return Err(Refusal::new("", "the config must be a JSON object"));
        };
        self.check_object("", map)
    }

    fn check_object(&self, prefix: &str, map: &Map<String, Value>) -> Result<(), Refusal> {
        for (key, value) in map {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Some(f) = self.field(&name) {
                if !value.is_null() {
                    f.check(value)?;
                }
            } else if self.is_group(&name) {
                match value {
                    Value::Null => {}
                    Value::Object(inner) => self.check_object(&name, inner)?,
                    _ => {
                        return Err(Refusal::new(
                            &name,
                            format!("{name} must be an object of settings"),
                        ));
                    }
                }
            } else if !value.is_null() {
                // `null` for a name the schema no longer has (a field a plugin stopped
                // declaring) removes the value left stored under it.
                return Err(Refusal::new(
                    &name,
                    format!("{name} is not a setting (GET /api/v1/config/schema lists them)"),
                ));
            }
        }
        Ok(())
    }

    /// Checks `patch`, then applies it to `current` as a JSON merge patch (RFC 7396): objects
    /// merge key by key, `null` removes (so the default applies), anything else replaces.
    /// Values stored before (unknown to this schema, say a removed plugin's) are kept.
    pub fn apply_patch(&self, current: &Value, patch: &Value) -> Result<Value, Refusal> {
        self.check_patch(patch)?;
        let mut out = if current.is_object() {
            current.clone()
        } else {
            Value::Object(Map::new())
        };
        merge_patch(&mut out, patch);
        let size = serde_json::to_vec(&out).map_or(0, |v| v.len());
        if size > MAX_CONFIG_BYTES {
            return Err(Refusal::new(
                "",
                format!(
                    "the config would be {size} bytes; a config may be at most {MAX_CONFIG_BYTES} bytes (it travels to hosts in one link message)"
                ),
            ));
        }
        Ok(out)
    }

    /// The config as a reader without the reveal permission sees it: secrets left out, and a
    /// map of each secret field to "set" or "not set".
    pub fn redact(&self, config: &Value) -> (Value, Map<String, Value>) {
        let mut shown = config.clone();
        let mut secrets = Map::new();
        for f in self.fields.iter().filter(|f| f.secret) {
            let set = get_path(config, f.name).is_some_and(|v| !v.is_null() && v != "");
            remove_path(&mut shown, f.name);
            secrets.insert(
                f.name.to_string(),
                json!(if set { SECRET_SET } else { SECRET_NOT_SET }),
            );
        }
        (shown, secrets)
    }

    /// A patch as the audit log records it: secrets as "changed", never their value.
    pub fn audit_view(&self, patch: &Value) -> Value {
        let mut out = patch.clone();
        for f in self.fields.iter().filter(|f| f.secret) {
            if get_path(patch, f.name).is_some() {
                set_path(&mut out, f.name, json!("changed"));
            }
        }
        out
    }

    /// The fields a patch sets or resets.
    pub fn touched(&self, patch: &Value) -> Vec<&'static Field> {
        self.fields
            .iter()
            .copied()
            .filter(|f| {
                let mut node = patch;
                for part in f.name.split('.') {
                    match node.get(part) {
                        None => return false,
                        Some(Value::Null) => return true,
                        Some(v) => node = v,
                    }
                }
                true
            })
            .collect()
    }

    /// Restart-required fields whose effective value differs between `running` (the config the
    /// instance was started with) and `current`.
    pub fn pending_restart(&self, running: &Value, current: &Value) -> Vec<&'static str> {
        let (a, b) = (self.resolve(running), self.resolve(current));
        self.fields
            .iter()
            .filter(|f| f.restart_required)
            .filter(|f| get_path(&a, f.name) != get_path(&b, f.name))
            .map(|f| f.name)
            .collect()
    }

    /// Environment variables and the field each sets, in declaration order (first name wins).
    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        self.fields
            .iter()
            .flat_map(|f| f.env.iter().map(move |v| (*v, f.name)))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!(
            self.fields
                .iter()
                .map(|f| f.to_json(self))
                .collect::<Vec<_>>()
        )
    }

    /// The README's table of these fields (a test keeps the README equal to it).
    pub fn markdown_table(&self) -> String {
        let with_env = self.fields.iter().any(|f| !f.env.is_empty());
        let mut s = String::from("| key | ");
        if with_env {
            s.push_str("environment | ");
        }
        s.push_str("type | default | meaning |\n|---|");
        if with_env {
            s.push_str("---|");
        }
        s.push_str("---|---|---|\n");
        for f in &self.fields {
            let default = match f.default.to_value() {
                Value::Null => String::new(),
                Value::String(t) if t.is_empty() => String::new(),
                Value::String(t) => format!("`{t}`"),
                other => format!("`{other}`"),
            };
            let mut notes = Vec::new();
            if f.secret {
                notes.push("secret");
            }
            if f.restart_required {
                notes.push("restart");
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            s.push_str(&format!("| `{}` | ", f.name));
            if with_env {
                let env: Vec<String> = f.env.iter().map(|e| format!("`{e}`")).collect();
                s.push_str(&format!("{} | ", env.join(" / ")));
            }
            s.push_str(&format!(
                "{} | {default} | {}{notes} |\n",
                f.rule().replace('|', "\\|"),
                f.description.replace('|', "\\|"),
            ));
        }
        s
    }
}

/// The value at a dotted path, if present.
pub fn get_path<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    name.split('.')
        .try_fold(config, |node, part| node.get(part))
}

/// Sets a dotted path, creating objects on the way (replacing non-objects).
pub fn set_path(config: &mut Value, name: &str, value: Value) {
    let mut node = config;
    let parts: Vec<&str> = name.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(m) => m.entry(part.to_string()).or_insert(Value::Null),
            _ => return,
        };
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    if let (Value::Object(m), Some(last)) = (node, parts.last()) {
        m.insert(last.to_string(), value);
    }
}

/// Removes a dotted path; parents left empty are removed too.
pub fn remove_path(config: &mut Value, name: &str) {
    match name.split_once('.') {
        None => {
            if let Value::Object(m) = config {
                m.remove(name);
            }
        }
        Some((head, rest)) => {
            if let Value::Object(m) = config
                && let Some(child) = m.get_mut(head)
            {
                remove_path(child, rest);
                if child.as_object().is_some_and(Map::is_empty) {
                    m.remove(head);
                }
            }
        }
    }
}

/// Deep overlay: objects merge, anything else in `top` replaces (nulls included are skipped).
fn merge(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, t) => {
            if !t.is_null() {
                *b = t.clone();
            }
        }
    }
}

/// RFC 7396, except that objects a patch empties are removed (nothing set there any more).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else if v.is_object() {
            let entry = t.entry(k.clone()).or_insert(Value::Object(Map::new()));
            merge_patch(entry, v);
            if entry.as_object().is_some_and(Map::is_empty) {
                t.remove(k);
            }
        } else {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: &[Field] = &[
        Field::new("a", Kind::Bool, Default::Bool(false)),
        Field::new("g.n", Kind::Integer { min: 0, max: 10 }, Default::Int(5)),
        Field::new(
            "g.s",
            Kind::Text {
                max_len: 8,
                rule: None,
            },
            Default::Str(""),
        )
        .secret(),
        Field::new("g.h.x", Kind::Enum(&["p", "q"]), Default::Str("p")).restart(),
    ];

    fn schema() -> Schema {
        Schema::new("r", "w", &[TEST])
    }

    #[test]
    fn a_patch_merges_nested_objects_and_null_restores_the_default() {
        let s = schema();
        let cur = json!({"g": {"n": 3, "s": "pw"}, "legacy": 1});
        let next = s.apply_patch(&cur, &json!({"g": {"n": 4}})).unwrap();
        assert_eq!(next, json!({"g": {"n": 4, "s": "pw"}, "legacy": 1}));
        let next = s.apply_patch(&next, &json!({"g": {"n": null}})).unwrap();
        assert_eq!(s.resolve(&next)["g"]["n"], 5);
        let next = s.apply_patch(&next, &json!({"g": null})).unwrap();
        assert_eq!(next, json!({"legacy": 1}));
    }

    #[test]
    fn refusals_name_the_field_and_the_rule() {
        let s = schema();
        let e = s.check_patch(&json!({"g": {"n": 11}})).unwrap_err();
        assert_eq!(e.message, "g.n must be an integer from 0 to 10");
        assert_eq!(e.field, "g.n");
        let e = s.check_patch(&json!({"g": {"h": {"x": "z"}}})).unwrap_err();
        assert_eq!(e.message, "g.h.x must be one of \"p\", \"q\"");
        assert_eq!(
            s.check_patch(&json!({"nope": 1})).unwrap_err().field,
            "nope"
        );
        assert_eq!(s.check_patch(&json!({"g": 1})).unwrap_err().field, "g");
        assert!(s.check_patch(&json!({"a": "true"})).is_err());
        assert!(s.check_patch(&json!({"g": {"n": 2.5}})).is_err());
    }

    #[test]
    fn secrets_are_masked_and_audited_as_changed() {
        let s = schema();
        let (shown, secrets) = s.redact(&json!({"g": {"s": "pw", "n": 1}}));
        assert_eq!(shown, json!({"g": {"n": 1}}));
        assert_eq!(secrets["g.s"], "set");
        assert_eq!(s.redact(&json!({})).1["g.s"], "not set");
        assert_eq!(
            s.audit_view(&json!({"g": {"s": "pw"}})),
            json!({"g": {"s": "changed"}})
        );
    }

    #[test]
    fn pending_restart_lists_changed_restart_fields() {
        let s = schema();
        let run = json!({});
        assert!(s.pending_restart(&run, &json!({"a": true})).is_empty());
        assert_eq!(
            s.pending_restart(&run, &json!({"g": {"h": {"x": "q"}}})),
            vec!["g.h.x"]
        );
        assert!(
            s.pending_restart(&run, &json!({"g": {"h": {"x": "p"}}}))
                .is_empty()
        );
    }

    #[test]
    fn text_parses_by_type() {
        let s = schema();
        assert_eq!(s.field("a").unwrap().parse("yes").unwrap(), json!(true));
        assert_eq!(s.field("g.n").unwrap().parse("7").unwrap(), json!(7));
        assert!(s.field("g.n").unwrap().parse("lots").is_err());
        assert_eq!(
            parse_as("list", "a.zip, b.zip").unwrap(),
            json!(["a.zip", "b.zip"])
        );
    }
}
