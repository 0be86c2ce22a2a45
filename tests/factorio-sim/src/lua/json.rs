//! Lua values ⇄ JSON: Factorio's `table_to_json` / `json_to_table` rules (a sequence becomes an
//! array, any other table an object, the empty table `{}`), and a lossless encoding used to keep
//! `storage` inside the save (key types, shared tables, non-UTF-8 strings and exact numbers kept;
//! functions refused like Factorio refuses them).

use std::collections::HashMap;

use mlua::{Lua, Table, Value};
use serde_json::{Value as Json, json};

const MAX_DEPTH: usize = 200;

fn number_text(n: f64) -> String {
    if !n.is_finite() {
        return "null".into();
    }
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

/// The entries of a table when it is a sequence 1..n (n ≥ 1), else None.
fn sequence(t: &Table) -> Result<Option<Vec<Value>>, String> {
    let mut count = 0usize;
    let mut max = 0usize;
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        count += 1;
        match as_number(&k) {
            Some(n) if n >= 1.0 && n.fract() == 0.0 && n < 1e15 => max = max.max(n as usize),
            _ => return Ok(None),
        }
    }
    if count == 0 || max != count {
        return Ok(None);
    }
    (1..=count)
        .map(|i| t.raw_get::<Value>(i as i64).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn write(out: &mut String, v: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("Table is too deeply nested (or contains a reference cycle).".into());
    }
    match v {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&number_text(*i as f64)),
        Value::Number(n) => out.push_str(&number_text(*n)),
        Value::String(s) => quote(out, &s.to_string_lossy()),
        Value::Table(t) => {
            if let Some(items) = sequence(t)? {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, x, depth + 1)?;
                }
                out.push(']');
            } else {
                out.push('{');
                let mut first = true;
                for pair in t.pairs::<Value, Value>() {
                    let (k, x) = pair.map_err(|e| e.to_string())?;
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        other => match as_number(other) {
                            Some(n) => number_text(n),
                            None => {
                                return Err(format!(
                                    "Value of type {} can't be used as a JSON key.",
                                    other.type_name()
                                ));
                            }
                        },
                    };
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    quote(out, &key);
                    out.push(':');
                    write(out, &x, depth + 1)?;
                }
                out.push('}');
            }
        }
        other => {
            return Err(format!(
                "Value of type {} can't be converted to JSON.",
                other.type_name()
            ));
        }
    }
    Ok(())
}

/// `helpers.table_to_json`.
pub fn table_to_json(v: &Value) -> Result<String, String> {
    let mut out = String::new();
    write(&mut out, v, 0)?;
    Ok(out)
}

/// JSON → Lua (`json_to_table`, event data built by the sim).
pub fn to_lua(lua: &Lua, v: &Json) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Array(a) => {
            let t = lua.create_table()?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i as i64 + 1, to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        Json::Object(m) => {
            let t = lua.create_table()?;
            for (k, x) in m {
                t.raw_set(k.as_str(), to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
    })
}

/// Lossless encoding of a Lua value for the save: `{"root": v, "tables": [[id, [[k, v], …]], …]}`
/// where a table value is `{"ref": id}` — flat, so shared tables and cycles survive and the
/// JSON stays shallow however deep the Lua data is.
pub struct Encoder<'a> {
    ids: HashMap<usize, u64>,
    next: u64,
    tables: Vec<Json>,
    /// Tables met but not written yet: (slot in `tables`, id, table, path) — a work list, so
    /// deep data never deepens the Rust stack.
    pending: Vec<(usize, u64, Table, String)>,
    /// Reference text of a game object (`player:1`) from its metatable, if it is one.
    object_of: &'a dyn Fn(&Table) -> Option<String>,
}

impl<'a> Encoder<'a> {
    pub fn new(object_of: &'a dyn Fn(&Table) -> Option<String>) -> Encoder<'a> {
        Encoder {
            ids: HashMap::new(),
            next: 1,
            tables: Vec::new(),
            pending: Vec::new(),
            object_of,
        }
    }

    /// Encode `v` (named `path` in error messages) with every table it reaches.
    pub fn encode_root(mut self, v: &Value, path: &str) -> Result<Json, String> {
        let root = self.encode(v, path)?;
        while let Some((slot, id, t, tpath)) = self.pending.pop() {
            let mut entries = Vec::new();
            for pair in t.pairs::<Value, Value>() {
                let (k, x) = pair.map_err(|e| e.to_string())?;
                let kp = if tpath.len() < 200 {
                    format!("{tpath}[{}]", key_text(&k))
                } else {
                    tpath.clone()
                };
                let ke = self.encode(&k, &kp)?;
                let xe = self.encode(&x, &kp)?;
                entries.push(Json::Array(vec![ke, xe]));
            }
            self.tables[slot] = json!([id, entries]);
        }
        Ok(json!({"root": root, "tables": self.tables}))
    }

    fn encode(&mut self, v: &Value, path: &str) -> Result<Json, String> {
        Ok(match v {
            Value::Nil => Json::Null,
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => json!(*i),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    json!(*n as i64)
                } else {
                    json!({"f": format!("{:016x}", n.to_bits())})
                }
            }
            Value::String(s) => match s.to_str() {
                Ok(text) => Json::String(text.to_string()),
                Err(_) => json!({"bytes": hex(&s.as_bytes())}),
            },
            Value::Table(t) => {
                if let Some(r) = (self.object_of)(t) {
                    return Ok(json!({"obj": r}));
                }
                let p = t.to_pointer() as usize;
                if let Some(id) = self.ids.get(&p) {
                    return Ok(json!({"ref": id}));
                }
                let id = self.next;
                self.next += 1;
                self.ids.insert(p, id);
                let slot = self.tables.len();
                self.tables.push(Json::Null);
                self.pending.push((slot, id, t.clone(), path.to_string()));
                json!({"ref": id})
            }
            other => {
                return Err(format!(
                    "Cannot save {path}: values of type {} can't be saved.",
                    other.type_name()
                ));
            }
        })
    }
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => number_text(*n),
        other => other.type_name().to_string(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| s.get(i * 2..i * 2 + 2))
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

/// Inverse of [`Encoder::encode_root`]; unknown shapes decode to nil (a damaged save loses
/// data, never crashes the sim).
pub fn decode(
    lua: &Lua,
    v: &Json,
    object: &dyn Fn(&str) -> mlua::Result<Value>,
) -> mlua::Result<Value> {
    let mut tables: HashMap<u64, Table> = HashMap::new();
    let list = v
        .get("tables")
        .and_then(|t| t.as_array())
        .cloned()
        .unwrap_or_default();
    for e in &list {
        if let Some(id) = e.get(0).and_then(|i| i.as_u64()) {
            tables.insert(id, lua.create_table()?);
        }
    }
    for e in &list {
        let (Some(t), Some(entries)) = (
            e.get(0)
                .and_then(|i| i.as_u64())
                .and_then(|id| tables.get(&id)),
            e.get(1).and_then(|x| x.as_array()),
        ) else {
            continue;
        };
        for kv in entries {
            let Some([k, x]) = kv.as_array().map(Vec::as_slice) else {
                continue;
            };
            let k = scalar(lua, k, &tables, object)?;
            let x = scalar(lua, x, &tables, object)?;
            let nan = matches!(k, Value::Number(n) if n.is_nan());
            if !matches!(k, Value::Nil) && !nan {
                t.raw_set(k, x)?;
            }
        }
    }
    match v.get("root") {
        Some(r) => scalar(lua, r, &tables, object),
        None => Ok(Value::Nil),
    }
}

fn scalar(
    lua: &Lua,
    v: &Json,
    tables: &HashMap<u64, Table>,
    object: &dyn Fn(&str) -> mlua::Result<Value>,
) -> mlua::Result<Value> {
    Ok(match v {
        Json::Null | Json::Array(_) => Value::Nil,
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Value::String(lua.create_string(s)?),
        Json::Object(m) => {
            if let Some(bits) = m.get("f").and_then(|f| f.as_str()) {
                Value::Number(
                    u64::from_str_radix(bits, 16)
                        .map(f64::from_bits)
                        .unwrap_or(0.0),
                )
            } else if let Some(b) = m.get("bytes").and_then(|f| f.as_str()) {
                Value::String(lua.create_string(unhex(b))?)
            } else if let Some(r) = m.get("obj").and_then(|f| f.as_str()) {
                object(r)?
            } else if let Some(id) = m.get("ref").and_then(|f| f.as_u64()) {
                tables
                    .get(&id)
                    .cloned()
                    .map(Value::Table)
                    .unwrap_or(Value::Nil)
            } else {
                Value::Nil
            }
        }
    })
}
