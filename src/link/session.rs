//! Per-session reliability, the same on both ends: the outbox keeps what we sent until the peer
//! acknowledges it; the inbox remembers the highest seq we took so a resent frame is not applied
//! twice.
//!
//! The outbox is bounded twice, by frames and by bytes: a peer that stops acknowledging cannot
//! make its session hold more than [`Limits::outbox_bytes`]. A frame larger than
//! [`Limits::max_frame`] is refused before it takes a seq, so it never reaches the peer (whose
//! socket would refuse it and, resent on every reconnect, poison the session).

use super::Frame;
use std::collections::VecDeque;
use std::sync::Arc;

/// How much one session may hold and send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unacknowledged frames kept at most.
    pub outbox_frames: usize,
    /// Unacknowledged bytes kept at most.
    pub outbox_bytes: usize,
    /// The largest frame the peer accepts.
    pub max_frame: usize,
}

#[derive(Debug)]
pub struct Outbox {
    next_seq: u64,
    unacked: VecDeque<(u64, Arc<str>)>,
    bytes: usize,
    limits: Limits,
}

/// Why a sequenced frame was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error(
        "{frames} messages ({bytes} bytes) are waiting for acknowledgement, over the limit of {max_frames} messages or {max_bytes} bytes; the session must start over"
    )]
    Overflow {
        frames: usize,
        bytes: usize,
        max_frames: usize,
        max_bytes: usize,
    },
    #[error("a {kind} of {size} bytes exceeds the link's frame limit of {max} bytes")]
    TooLarge {
        kind: &'static str,
        size: usize,
        max: usize,
    },
}

impl SendError {
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Overflow { .. } => "overflow",
            SendError::TooLarge { .. } => "too_large",
        }
    }

    pub fn to_body(&self) -> super::ErrorBody {
        super::ErrorBody::new(self.code(), self.to_string())
    }
}

/// The old name of [`SendError`].
pub type Overflow = SendError;

impl Outbox {
    pub fn new(limits: Limits) -> Self {
        Outbox {
            next_seq: 1,
            unacked: VecDeque::new(),
            bytes: 0,
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The peer told us the largest frame it takes.
    pub fn set_max_frame(&mut self, max: usize) {
        self.limits.max_frame = max;
    }

    /// Gives `build` the next seq, keeps the frame until acknowledged and returns its text.
    /// Nothing changes when it is refused (the seq is not used).
    pub fn push(&mut self, build: impl FnOnce(u64) -> Frame) -> Result<Arc<str>, SendError> {
        self.push_text(|seq| {
            let frame = build(seq);
            (frame_kind(&frame), frame.to_text())
        })
    }

    /// Like [`Self::push`] for a frame whose text is already written (`build` gets the seq and
    /// returns the frame's kind and text): an event serialised once for many sessions is only
    /// spliced into each session's envelope.
    pub fn push_text(
        &mut self,
        build: impl FnOnce(u64) -> (&'static str, String),
    ) -> Result<Arc<str>, SendError> {
        let l = self.limits;
        if self.unacked.len() >= l.outbox_frames || self.bytes > l.outbox_bytes {
            return Err(self.overflow());
        }
        let seq = self.next_seq;
        let (kind, text) = build(seq);
        if text.len() > l.max_frame {
            return Err(SendError::TooLarge {
                kind,
                size: text.len(),
                max: l.max_frame,
            });
        }
        if self.bytes + text.len() > l.outbox_bytes {
            return Err(SendError::Overflow {
                frames: self.unacked.len() + 1,
                bytes: self.bytes + text.len(),
                max_frames: l.outbox_frames,
                max_bytes: l.outbox_bytes,
            });
        }
        self.next_seq += 1;
        let text: Arc<str> = Arc::from(text);
        self.bytes += text.len();
        self.unacked.push_back((seq, text.clone()));
        Ok(text)
    }

    fn overflow(&self) -> SendError {
        SendError::Overflow {
            frames: self.unacked.len(),
            bytes: self.bytes,
            max_frames: self.limits.outbox_frames,
            max_bytes: self.limits.outbox_bytes,
        }
    }

    /// Drops everything up to and including `ack`.
    pub fn ack(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            if let Some((_, text)) = self.unacked.pop_front() {
                self.bytes -= text.len();
            }
        }
    }

    /// Frames still unacknowledged, oldest first (to resend after a resume).
    pub fn pending(&self) -> impl Iterator<Item = &Arc<str>> {
        self.unacked.iter().map(|(_, text)| text)
    }

    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    /// Bytes waiting for acknowledgement.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Request { .. } => "request",
        Frame::Response { .. } => "response",
        Frame::Event { .. } => "event",
        _ => "frame",
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Accept {
    /// The next frame in order: apply it.
    New,
    /// Already applied (a resend): ignore it.
    Duplicate,
    /// Frames are missing before this one: the peer broke the protocol.
    Gap { expected: u64 },
}

#[derive(Debug, Default)]
pub struct Inbox {
    last_seq: u64,
}

impl Inbox {
    pub fn new() -> Self {
        Inbox::default()
    }

    pub fn accept(&mut self, seq: u64) -> Accept {
        if seq <= self.last_seq {
            Accept::Duplicate
        } else if seq == self.last_seq + 1 {
            self.last_seq = seq;
            Accept::New
        } else {
            Accept::Gap {
                expected: self.last_seq + 1,
            }
        }
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Frame {
        Frame::Event {
            seq,
            ack: None,
            name: "e".into(),
            data: serde_json::Value::Null,
        }
    }

    fn limits(frames: usize, bytes: usize, max_frame: usize) -> Limits {
        Limits {
            outbox_frames: frames,
            outbox_bytes: bytes,
            max_frame,
        }
    }

    #[test]
    fn acked_frames_are_dropped_and_the_rest_kept_in_order() {
        let mut out = Outbox::new(limits(10, 1 << 20, 1 << 20));
        for _ in 0..5 {
            out.push(event).unwrap();
        }
        out.ack(3);
        let pending: Vec<_> = out
            .pending()
            .map(|t| Frame::parse(t).unwrap().seq())
            .collect();
        assert_eq!(pending, vec![Some(4), Some(5)]);
    }

    #[test]
    fn overflow_is_reported() {
        let mut out = Outbox::new(limits(2, 1 << 20, 1 << 20));
        out.push(event).unwrap();
        out.push(event).unwrap();
        assert!(out.push(event).is_err());
    }

    #[test]
    fn the_outbox_is_bounded_in_bytes_and_acks_free_them() {
        let one = event(1).to_text().len();
        let mut out = Outbox::new(limits(1000, one * 3, 1 << 20));
        for _ in 0..3 {
            out.push(event).unwrap();
        }
        let err = out.push(event).unwrap_err();
        assert_eq!(err.code(), "overflow");
        assert!(
            err.to_string().contains(&format!("{} bytes", one * 3)),
            "{err}"
        );
        out.ack(2);
        assert_eq!(out.bytes(), one);
        out.push(event).unwrap();
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_without_using_a_seq() {
        let mut out = Outbox::new(limits(10, 1 << 20, 100));
        let big = |seq| Frame::Event {
            seq,
            ack: None,
            name: "e".into(),
            data: serde_json::json!("x".repeat(500)),
        };
        let err = out.push(big).unwrap_err();
        assert_eq!(err.code(), "too_large");
        assert!(err.to_string().contains("limit of 100 bytes"), "{err}");
        assert!(out.is_empty());
        let text = out.push(event).unwrap();
        assert_eq!(Frame::parse(&text).unwrap().seq(), Some(1));
    }

    #[test]
    fn an_event_spliced_from_its_serialised_data_parses_like_one_built_whole() {
        let data = serde_json::json!({"name": "a \"quoted\" name", "n": [1, 2]});
        let shared = super::super::endpoint::SharedEvent::new("user_updated", &data);
        let mut out = Outbox::new(limits(10, 1 << 20, 1 << 20));
        out.push(event).unwrap();
        let text = out
            .push_text(|seq| ("event", shared.frame(seq, 7)))
            .unwrap();
        assert_eq!(
            Frame::parse(&text).unwrap(),
            Frame::Event {
                seq: 2,
                ack: Some(7),
                name: "user_updated".into(),
                data,
            }
        );
        let mut small = Outbox::new(limits(10, 1 << 20, 10));
        let err = small
            .push_text(|seq| ("event", shared.frame(seq, 0)))
            .unwrap_err();
        assert_eq!(err.code(), "too_large");
        assert!(small.is_empty());
    }

    #[test]
    fn inbox_ignores_duplicates_and_flags_gaps() {
        let mut inbox = Inbox::new();
        assert_eq!(inbox.accept(1), Accept::New);
        assert_eq!(inbox.accept(1), Accept::Duplicate);
        assert_eq!(inbox.accept(3), Accept::Gap { expected: 2 });
        assert_eq!(inbox.accept(2), Accept::New);
    }
}
