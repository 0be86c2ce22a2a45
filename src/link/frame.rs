//! Frame types: everything that crosses the link socket.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An error with a machine-readable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeInfo {
    pub session: String,
    /// Highest seq the client has received from the server.
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// `host` or `control`.
    pub role: String,
    pub token: String,
    /// Host name (hosts only; required when registering with the join token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// clustorio version of the peer, for display.
    #[serde(default)]
    pub software: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeInfo>,
    /// Hosts: the plugins this host runs, with their versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<crate::plugins::PluginVersion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub session: String,
    pub heartbeat_ms: u64,
    pub resume_window_ms: u64,
    /// True when an existing session was resumed.
    pub resumed: bool,
    /// Highest seq the server has received from the client in this session.
    pub last_seq: u64,
    /// Hosts: their id and name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Value>,
    /// A host that registered with the join token gets its own token here, once; it should use
    /// it from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_token: Option<String>,
    /// Control clients: the user's name and permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
    /// Hosts: the plugins the cluster enables (the host runs those it also has).
    #[serde(default)]
    pub plugins: Vec<crate::plugins::PluginVersion>,
    /// The largest frame the controller accepts (0: not said; assume [`super::DEFAULT_MAX_FRAME`]).
    #[serde(default)]
    pub max_frame_bytes: u64,
    /// A resume that could not be honoured: why the old session ended (its outbox overflowed, it
    /// expired, …). The client starts fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<ErrorBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Hello(Hello),
    Ready(Ready),
    Ack {
        ack: u64,
    },
    Ping {
        ack: u64,
    },
    Pong {
        ack: u64,
    },
    Error(ErrorBody),
    Close(ErrorBody),
    Request {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
        id: u64,
        name: String,
        #[serde(default)]
        data: Value,
    },
    Response {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
        id: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    Event {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<u64>,
        name: String,
        #[serde(default)]
        data: Value,
    },
}

impl Frame {
    /// The seq of a sequenced frame (request, response, event).
    pub fn seq(&self) -> Option<u64> {
        match self {
            Frame::Request { seq, .. } | Frame::Response { seq, .. } | Frame::Event { seq, .. } => {
                Some(*seq)
            }
            _ => None,
        }
    }

    /// The cumulative acknowledgement a frame carries, if any.
    pub fn ack(&self) -> Option<u64> {
        match self {
            Frame::Ack { ack } | Frame::Ping { ack } | Frame::Pong { ack } => Some(*ack),
            Frame::Request { ack, .. } | Frame::Response { ack, .. } | Frame::Event { ack, .. } => {
                *ack
            }
            _ => None,
        }
    }

    pub fn to_text(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a text frame; the error says what was wrong in words a client author can act on.
    pub fn parse(text: &str) -> Result<Frame, ErrorBody> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ErrorBody::new("bad_frame", format!("frame is not valid JSON: {e}")))?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| ErrorBody::new("bad_frame", "frame has no string field \"type\""))?
            .to_string();
        serde_json::from_value(value).map_err(|e| {
            if e.to_string().starts_with("unknown variant") {
                ErrorBody::new("unknown_type", format!("unknown frame type \"{kind}\""))
            } else {
                ErrorBody::new("bad_frame", format!("malformed \"{kind}\" frame: {e}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = Frame::Request {
            seq: 3,
            ack: Some(2),
            id: 9,
            name: "instance_create".into(),
            data: serde_json::json!({"name": "a"}),
        };
        let text = f.to_text();
        assert!(text.contains(r#""type":"request""#));
        assert_eq!(Frame::parse(&text).unwrap(), f);
    }

    #[test]
    fn bad_frames_have_clear_codes() {
        assert_eq!(Frame::parse("{").unwrap_err().code, "bad_frame");
        assert_eq!(Frame::parse("{}").unwrap_err().code, "bad_frame");
        assert_eq!(
            Frame::parse(r#"{"type":"teleport"}"#).unwrap_err().code,
            "unknown_type"
        );
        assert_eq!(
            Frame::parse(r#"{"type":"request","seq":"x"}"#)
                .unwrap_err()
                .code,
            "bad_frame"
        );
    }
}
