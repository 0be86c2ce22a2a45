//! The audit log: who changed what, when. Written in the same transaction as the change.

use super::{Result, now_ms};
use rusqlite::{Connection, params};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Value,
}

/// Largest detail an audit row keeps (serialized JSON); bigger ones are summarized.
pub const MAX_DETAIL_BYTES: usize = 4096;
/// Longest string value kept in a detail; longer ones are cut, with their length noted.
pub const MAX_VALUE_CHARS: usize = 120;
/// Most entries of one array or object kept in a detail.
pub const MAX_ITEMS: usize = 32;
/// Deepest nesting kept in a detail.
const MAX_DEPTH: usize = 4;
/// Largest `/audit` reply: entries are listed newest first until this many bytes of detail.
pub const MAX_LIST_BYTES: usize = 1 << 20;

pub fn record(
    conn: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &Value,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        now_ms(),
        actor,
        action,
        target,
        bounded(detail).to_string()
    ])?;
    Ok(())
}

/// A detail as an audit row keeps it: small ones whole; big ones (a config patch of a large
/// config) as their field names with truncated values, never more than `MAX_DETAIL_BYTES`.
pub fn bounded(detail: &Value) -> Value {
    let text = detail.to_string();
    if text.len() <= MAX_DETAIL_BYTES {
        return detail.clone();
    }
    // Fewer and shorter values until it fits.
    let mut summary = Value::Null;
    for (items, chars) in [(MAX_ITEMS, MAX_VALUE_CHARS), (8, 48), (2, 16)] {
        summary = summarize(detail, 0, items, chars);
        if summary.to_string().len() <= MAX_DETAIL_BYTES {
            break;
        }
    }
    if summary.to_string().len() > MAX_DETAIL_BYTES {
        // Still too big (many fields): the top-level field names alone.
        summary = match detail {
            Value::Object(m) => {
                let fields: Vec<&String> = m.keys().take(MAX_ITEMS).collect();
                json!({ "fields": fields, "field_count": m.len() })
            }
            _ => json!(null),
        };
    }
    if let Value::Object(m) = &mut summary {
        m.insert("truncated_from_bytes".into(), json!(text.len()));
        summary
    } else {
        json!({ "value": summary, "truncated_from_bytes": text.len() })
    }
}

fn summarize(v: &Value, depth: usize, items: usize, chars: usize) -> Value {
    match v {
        Value::String(s) if s.chars().count() > chars => {
            let cut: String = s.chars().take(chars).collect();
            json!(format!("{cut}… ({} bytes)", s.len()))
        }
        Value::Array(a) if depth >= MAX_DEPTH => json!(format!("[{} items]", a.len())),
        Value::Object(m) if depth >= MAX_DEPTH => json!(format!("{{{} fields}}", m.len())),
        Value::Array(a) => {
            let mut out: Vec<Value> = a
                .iter()
                .take(items)
                .map(|x| summarize(x, depth + 1, items, chars))
                .collect();
            if a.len() > items {
                out.push(json!(format!("… {} more", a.len() - items)));
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m.iter().take(items) {
                out.insert(k.clone(), summarize(x, depth + 1, items, chars));
            }
            if m.len() > items {
                out.insert(
                    "…".into(),
                    json!(format!("{} more fields", m.len() - items)),
                );
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The newest `limit` entries, newest first, and no more than `MAX_LIST_BYTES` of detail
/// (rows written before details were bounded are summarized as they are read).
pub fn list(conn: &Connection, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let mut rows = stmt.query([limit])?;
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    while let Some(r) = rows.next()? {
        let detail: String = r.get(5)?;
        let mut value: Value = serde_json::from_str(&detail).unwrap_or(Value::Null);
        if detail.len() > MAX_DETAIL_BYTES {
            value = bounded(&value);
        }
        let entry = AuditEntry {
            id: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            detail: value,
        };
        bytes += entry.detail.to_string().len() + entry.actor.len() + entry.target.len() + 64;
        if bytes > MAX_LIST_BYTES && !out.is_empty() {
            break;
        }
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_detail_is_kept_as_field_names_and_cut_values() {
        let big = "x".repeat(1 << 20);
        let detail =
            json!({ "server_settings": { "description": big, "max_players": 8 }, "mods": ["a"] });
        let b = bounded(&detail);
        assert!(
            b.to_string().len() <= MAX_DETAIL_BYTES + 64,
            "{}",
            b.to_string().len()
        );
        assert_eq!(b["server_settings"]["max_players"], 8);
        assert!(
            b["server_settings"]["description"]
                .as_str()
                .unwrap()
                .contains("1048576 bytes")
        );
        assert_eq!(b["mods"], json!(["a"]));
        let small = json!({ "name": "a" });
        assert_eq!(bounded(&small), small);
        let wide: serde_json::Map<String, Value> = (0..5000)
            .map(|i| (format!("field{i}"), json!("v".repeat(100))))
            .collect();
        let b = bounded(&Value::Object(wide));
        assert!(b.to_string().len() <= MAX_DETAIL_BYTES + 64);
        assert!(b.to_string().contains("more fields"), "{b}");
    }
}
