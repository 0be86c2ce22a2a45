//! What the controller keeps for an external plugin while it is away: the messages of its
//! durable channels, bounded in count and bytes. What does not fit is counted and dropped.

use serde_json::Value;
use std::collections::VecDeque;

/// Default bounds of one plugin's queue.
pub const DEFAULT_MAX_COUNT: usize = 10_000;
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct DurableQueue {
    items: VecDeque<(String, Value, usize)>,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
    /// Messages refused because the queue was full, since the controller started.
    pub dropped: u64,
}

impl DurableQueue {
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        DurableQueue {
            items: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
            dropped: 0,
        }
    }

    /// Keeps an event (`name`, `data`) unless the queue is full; returns whether it was kept.
    pub fn push(&mut self, name: &str, data: Value) -> bool {
        let size = name.len() + data.to_string().len();
        if self.items.len() >= self.max_count || self.bytes + size > self.max_bytes {
            self.dropped += 1;
            return false;
        }
        self.bytes += size;
        self.items.push_back((name.to_string(), data, size));
        true
    }

    /// Everything kept, oldest first; the queue is empty afterwards.
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        self.bytes = 0;
        self.items.drain(..).map(|(n, d, _)| (n, d)).collect()
    }

    /// Puts messages back in front (a restarted process's unacknowledged ones).
    pub fn push_front_all(&mut self, items: Vec<(String, Value)>) {
        for (name, data) in items.into_iter().rev() {
            let size = name.len() + data.to_string().len();
            self.bytes += size;
            self.items.push_front((name, data, size));
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_by_count_and_bytes_in_order() {
        let mut q = DurableQueue::new(2, 1000);
        assert!(q.push("ipc", json!(1)));
        assert!(q.push("ipc", json!(2)));
        assert!(!q.push("ipc", json!(3)));
        assert_eq!(q.dropped, 1);
        let got: Vec<_> = q.drain().into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, vec![json!(1), json!(2)]);
        assert!(q.is_empty());
        let mut q = DurableQueue::new(100, 20);
        assert!(q.push("ipc", json!("0123456789")));
        assert!(!q.push("ipc", json!("0123456789")));
        assert!(q.bytes() > 0);
        q.push_front_all(vec![("ipc".into(), json!(0))]);
        assert_eq!(q.drain()[0].1, json!(0));
    }
}
