//! The link: JSON frames over one WebSocket at `/api/socket`, shared by the controller, hosts,
//! the web UI and ctl (DESIGN §3).
//!
//! ```text
//! client → {"type":"hello","version":1,"role":"host","token":"…","name":"…","resume":{"session":"…","last_seq":7}?}
//! server → {"type":"ready","session":"…","heartbeat_ms":15000,"resume_window_ms":60000,"resumed":false,"last_seq":0,…}
//! either → {"type":"request","seq":1,"id":1,"name":"instance_create","data":{…}}
//!          {"type":"response","seq":2,"id":1,"ok":{…}}  |  {…,"error":{"code":"…","message":"…"}}
//!          {"type":"event","seq":3,"name":"instance_updated","data":{…}}
//!          {"type":"ack","ack":3}  {"type":"ping","ack":3}  {"type":"pong","ack":3}
//! server → {"type":"error","code":"…","message":"…"}   a frame it could not use; the link stays up
//!          {"type":"close","code":"…","message":"…"}   why it is about to close the socket
//! ```
//! `ready` also says the largest frame the controller takes (`max_frame_bytes`); neither side
//! sends a frame over the other's limit: the request fails with `too_large` instead.
//! Requests, responses and events carry `seq` (per session, from 1) and are kept by the sender
//! until acknowledged; after a drop the client sends `hello` with `resume` within the window,
//! both sides drop what the other acknowledged and resend the rest, and receivers ignore any seq
//! they have already seen. So a short drop loses nothing and delivers nothing twice.

pub mod attach;
pub mod client;
pub mod endpoint;
pub mod frame;
pub mod session;

pub use frame::{ErrorBody, Frame, Hello, Ready, ResumeInfo};
pub use session::{Accept, Inbox, Limits, Outbox, SendError};

/// Bumped on incompatible changes; a peer with another version is refused with a clear reason.
pub const PROTOCOL_VERSION: u32 = 1;
/// Path of the link socket on the controller.
pub const SOCKET_PATH: &str = "/api/socket";

/// The largest frame any clustorio peer reads; the controller's `max_message_bytes` may not be
/// set above it, so what one side may send the other can always take.
pub const FRAME_CEILING: usize = 64 << 20;
/// The frame limit until the peer says its own (in `ready`); the controller's default.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;
