//! The game → host channel: Lua prints `\f$ipc:<channel>?j<json>` on stdout, or, for payloads
//! of 4,000 bytes and more, writes `script-output/<file>` and prints `\f$ipc:<channel>?f<file>`
//! (research/plugins.md §1.5). Channel bytes `\x00`–`\x1f`, `?` and `\` arrive escaped as `\xNN`.
//!
//! [`parse`] only looks at one line; [`read_file_payload`] fetches and deletes a file payload.
//! Nothing here panics on what a game prints.

use serde_json::Value;
use std::path::Path;

/// Every IPC line starts with these bytes (form feed, `$ipc:`).
pub const MARKER: &[u8] = b"\x0c$ipc:";
/// Largest payload accepted, inline or from a file.
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The JSON came on the line itself.
    Json(Value),
    /// The JSON is in `script-output/<name>` (already checked to be a plain file name).
    File(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct IpcLine {
    pub channel: String,
    pub payload: Payload,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IpcError {
    #[error("IPC line has no '?' after the channel")]
    NoSeparator,
    #[error("IPC channel is empty")]
    EmptyChannel,
    #[error("IPC channel has a bad escape (expected \\xNN)")]
    BadEscape,
    #[error("IPC channel is not UTF-8")]
    ChannelNotUtf8,
    #[error("unknown IPC payload type {0:?} (expected 'j' or 'f')")]
    UnknownType(char),
    #[error("IPC payload to '{channel}' is not UTF-8")]
    PayloadNotUtf8 { channel: String },
    #[error("malformed JSON to '{channel}': {message}")]
    BadJson { channel: String, message: String },
    #[error("invalid IPC file name {0:?} (a plain name ending in .json)")]
    BadFileName(String),
    #[error("IPC payload to '{channel}' is {size} bytes, over the {max}-byte limit")]
    TooLarge {
        channel: String,
        size: u64,
        max: usize,
    },
    #[error("reading IPC file '{name}': {message}")]
    File { name: String, message: String },
}

impl IpcError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IpcError::NoSeparator | IpcError::EmptyChannel | IpcError::UnknownType(_) => {
                "malformed"
            }
            IpcError::BadEscape | IpcError::ChannelNotUtf8 | IpcError::PayloadNotUtf8 { .. } => {
                "encoding"
            }
            IpcError::BadJson { .. } => "json",
            IpcError::BadFileName(_) => "file_name",
            IpcError::TooLarge { .. } => "too_large",
            IpcError::File { .. } => "file",
        }
    }
}

/// `None` when the line is not IPC (the marker must start the line); otherwise the parsed line
/// or why it is malformed.
pub fn parse(line: &[u8]) -> Option<Result<IpcLine, IpcError>> {
    let rest = line.strip_prefix(MARKER)?;
    Some(parse_body(rest))
}

fn parse_body(rest: &[u8]) -> Result<IpcLine, IpcError> {
    let sep = rest
        .iter()
        .position(|&b| b == b'?')
        .ok_or(IpcError::NoSeparator)?;
    let channel = decode_channel(&rest[..sep])?;
    if channel.is_empty() {
        return Err(IpcError::EmptyChannel);
    }
    let Some((&kind, body)) = rest[sep + 1..].split_first() else {
        return Err(IpcError::UnknownType('\0'));
    };
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(IpcError::TooLarge {
            channel,
            size: body.len() as u64,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| IpcError::PayloadNotUtf8 {
        channel: channel.clone(),
    })?;
    match kind {
        b'j' => {
            let value = parse_json(&channel, text)?;
            Ok(IpcLine {
                channel,
                payload: Payload::Json(value),
            })
        }
        b'f' => {
            check_file_name(text)?;
            Ok(IpcLine {
                channel,
                payload: Payload::File(text.to_string()),
            })
        }
        other => Err(IpcError::UnknownType(other as char)),
    }
}

fn parse_json(channel: &str, text: &str) -> Result<Value, IpcError> {
    serde_json::from_str(text).map_err(|e| IpcError::BadJson {
        channel: channel.to_string(),
        message: e.to_string(),
    })
}

/// Decodes `\xNN` escapes (either case of hex digit).
pub fn decode_channel(raw: &[u8]) -> Result<String, IpcError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let hex = raw.get(i + 1..i + 4).ok_or(IpcError::BadEscape)?;
            if hex[0] != b'x' {
                return Err(IpcError::BadEscape);
            }
            let digits = std::str::from_utf8(&hex[1..]).map_err(|_| IpcError::BadEscape)?;
            out.push(u8::from_str_radix(digits, 16).map_err(|_| IpcError::BadEscape)?);
            i += 4;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| IpcError::ChannelNotUtf8)
}

/// Escapes a channel name the way the Lua side does (for tests and tools).
pub fn encode_channel(channel: &str) -> String {
    let mut out = String::with_capacity(channel.len());
    for b in channel.bytes() {
        if b < 0x20 || b == b'?' || b == b'\\' {
            out.push_str(&format!("\\x{b:02x}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// A file payload's name: one path component, printable ASCII, ending in `.json`.
fn check_file_name(name: &str) -> Result<(), IpcError> {
    let ok = name.len() <= 200
        && name.ends_with(".json")
        && name.len() > 5
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(IpcError::BadFileName(name.to_string()))
    }
}

/// Reads a file payload from `script_output`, then deletes it (whether or not it parsed, so a
/// bad file cannot pile up).
pub fn read_file_payload(
    script_output: &Path,
    channel: &str,
    name: &str,
) -> Result<Value, IpcError> {
    check_file_name(name)?;
    let path = script_output.join(name);
    let file_err = |e: std::io::Error| IpcError::File {
        name: name.to_string(),
        message: e.to_string(),
    };
    let size = std::fs::symlink_metadata(&path).map_err(file_err)?.len();
    let result = if size > MAX_PAYLOAD_BYTES as u64 {
        Err(IpcError::TooLarge {
            channel: channel.to_string(),
            size,
            max: MAX_PAYLOAD_BYTES,
        })
    } else {
        std::fs::read(&path).map_err(file_err).and_then(|bytes| {
            let text = String::from_utf8(bytes).map_err(|_| IpcError::PayloadNotUtf8 {
                channel: channel.to_string(),
            })?;
            parse_json(channel, &text)
        })
    };
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(file = %path.display(), error = %e, "could not delete an IPC file");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(line: &[u8]) -> IpcLine {
        match parse(line) {
            Some(Ok(l)) => l,
            other => panic!("expected an IPC line, got {other:?}"),
        }
    }

    fn bad(line: &[u8]) -> IpcError {
        match parse(line) {
            Some(Err(e)) => e,
            other => panic!("expected an IPC error, got {other:?}"),
        }
    }

    #[test]
    fn json_form() {
        let l = ok(b"\x0c$ipc:player_event?j{\"type\":\"join\",\"name\":\"Alice\"}");
        assert_eq!(l.channel, "player_event");
        assert_eq!(
            l.payload,
            Payload::Json(json!({"type": "join", "name": "Alice"}))
        );
    }

    #[test]
    fn file_form() {
        let l = ok(b"\x0c$ipc:big?fclst_12.json");
        assert_eq!(l.payload, Payload::File("clst_12.json".into()));
    }

    #[test]
    fn colon_is_not_escaped_and_escapes_decode() {
        assert_eq!(ok(b"\x0c$ipc:a:b?j1").channel, "a:b");
        assert_eq!(ok(b"\x0c$ipc:a\\x3fb\\x5cc\\x0ad?j1").channel, "a?b\\c\nd");
        assert_eq!(ok(b"\x0c$ipc:a\\x3Fb?j1").channel, "a?b");
        for c in ["plain", "with?question", "back\\slash", "tab\there", "a:b"] {
            let line = format!("\x0c$ipc:{}?j[]", encode_channel(c));
            assert_eq!(ok(line.as_bytes()).channel, c);
        }
    }

    #[test]
    fn json_payload_may_contain_question_marks() {
        let l = ok(b"\x0c$ipc:chat?j{\"text\":\"why?\"}");
        assert_eq!(l.payload, Payload::Json(json!({"text": "why?"})));
    }

    #[test]
    fn not_ipc() {
        assert!(parse(b"   1.000 Info something").is_none());
        assert!(parse(b"hello \x0c$ipc:x?j1").is_none());
        assert!(parse(b"$ipc:x?j1").is_none());
        assert!(parse(b"").is_none());
    }

    #[test]
    fn malformed() {
        assert_eq!(bad(b"\x0c$ipc:nochannel"), IpcError::NoSeparator);
        assert_eq!(bad(b"\x0c$ipc:?j1"), IpcError::EmptyChannel);
        assert_eq!(bad(b"\x0c$ipc:x?"), IpcError::UnknownType('\0'));
        assert_eq!(bad(b"\x0c$ipc:x?q{}"), IpcError::UnknownType('q'));
        assert!(matches!(
            bad(b"\x0c$ipc:x?j{oops"),
            IpcError::BadJson { .. }
        ));
        assert_eq!(bad(b"\x0c$ipc:a\\x4?j1"), IpcError::BadEscape);
        assert_eq!(bad(b"\x0c$ipc:a\\y41?j1"), IpcError::BadEscape);
        assert_eq!(bad(b"\x0c$ipc:a\\xzz?j1"), IpcError::BadEscape);
    }

    #[test]
    fn non_utf8() {
        assert_eq!(bad(b"\x0c$ipc:a\xff?j1"), IpcError::ChannelNotUtf8);
        assert_eq!(bad(b"\x0c$ipc:a\\xff?j1"), IpcError::ChannelNotUtf8);
        assert!(matches!(
            bad(b"\x0c$ipc:a?j\"\xfe\""),
            IpcError::PayloadNotUtf8 { .. }
        ));
    }

    #[test]
    fn bad_file_names() {
        for name in [
            "../x.json",
            "a/b.json",
            "a\\b.json",
            "x\0.json",
            "x.txt",
            ".json",
            "..json",
            ".hidden.json",
        ] {
            let line = [b"\x0c$ipc:c?f".as_slice(), name.as_bytes()].concat();
            assert!(
                matches!(bad(&line), IpcError::BadFileName(_)),
                "{name:?} accepted"
            );
        }
    }

    #[test]
    fn file_payload_is_read_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let big = json!({"data": "x".repeat(5000)});
        std::fs::write(dir.path().join("clst_1.json"), big.to_string()).unwrap();
        assert_eq!(
            read_file_payload(dir.path(), "c", "clst_1.json").unwrap(),
            big
        );
        assert!(!dir.path().join("clst_1.json").exists());
        // Missing file, bad JSON (deleted anyway), bad name.
        assert!(matches!(
            read_file_payload(dir.path(), "c", "clst_1.json"),
            Err(IpcError::File { .. })
        ));
        std::fs::write(dir.path().join("clst_2.json"), "{nope").unwrap();
        assert!(matches!(
            read_file_payload(dir.path(), "c", "clst_2.json"),
            Err(IpcError::BadJson { .. })
        ));
        assert!(!dir.path().join("clst_2.json").exists());
        assert!(matches!(
            read_file_payload(dir.path(), "c", "../clst_3.json"),
            Err(IpcError::BadFileName(_))
        ));
    }
}
