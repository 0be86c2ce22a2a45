//! Per-session reliability, the same on both ends: the outbox keeps what we sent until the peer
//! acknowledges it; the inbox remembers the highest seq we took so a resent frame is not applied
//! twice.

use super::Frame;
use std::collections::VecDeque;

#[derive(Debug)]
pub struct Outbox {
    next_seq: u64,
    unacked: VecDeque<(u64, String)>,
    limit: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("more than {0} messages are waiting for acknowledgement; the session must start over")]
pub struct Overflow(pub usize);

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            next_seq: 1,
            unacked: VecDeque::new(),
            limit,
        }
    }

    /// Gives `build` the next seq, keeps the frame until acknowledged and returns its text.
    pub fn push(&mut self, build: impl FnOnce(u64) -> Frame) -> Result<String, Overflow> {
        if self.unacked.len() >= self.limit {
            return Err(Overflow(self.limit));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let text = build(seq).to_text();
        self.unacked.push_back((seq, text.clone()));
        Ok(text)
    }

    /// Drops everything up to and including `ack`.
    pub fn ack(&mut self, ack: u64) {
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= ack) {
            self.unacked.pop_front();
        }
    }

    /// Frames still unacknowledged, oldest first (to resend after a resume).
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.unacked.iter().map(|(_, text)| text.as_str())
    }

    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
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

    #[test]
    fn acked_frames_are_dropped_and_the_rest_kept_in_order() {
        let mut out = Outbox::new(10);
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
        let mut out = Outbox::new(2);
        out.push(event).unwrap();
        out.push(event).unwrap();
        assert!(out.push(event).is_err());
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
