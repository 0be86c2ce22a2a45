//! Players online and instance counts over time, for the web UI's charts: sampled every 10 s,
//! the last 24 h kept in memory.

use super::Controller;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(10);
const KEEP: usize = 24 * 360;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub at: i64,
    pub players: usize,
    pub instances: usize,
    pub running: usize,
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, s: Sample) {
        let mut v = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() == KEEP {
            v.pop_front();
        }
        v.push_back(s);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let v = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({ "interval_s": INTERVAL.as_secs(), "samples": v.iter().collect::<Vec<_>>() })
    }
}

pub async fn sample(ctl: Arc<Controller>) {
    loop {
        if let Ok(views) = ctl.instance_views().await {
            let players = views
                .iter()
                .map(|v| v["players_online"].as_array().map(Vec::len).unwrap_or(0))
                .sum();
            let running = views.iter().filter(|v| v["status"] == "running").count();
            ctl.history.push(Sample {
                at: crate::store::now_ms(),
                players,
                instances: views.len(),
                running,
            });
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
