//! Sim-only side channels for simulated players and faults (research/factorio.md §8.9), which a
//! real server does not have, so nothing in the product can come to depend on them:
//! * `FACTORIO_STANDIN_SCRIPT=<file.jsonl>`: timed events, one JSON object per line, e.g.
//!   `{"at_ms": 1500, "do": "join", "name": "Alice"}`, `{"at_ms": 2000, "do": "chat", "name": "Alice",
//!   "text": "hi"}`, `{"do": "leave", …}`, `{"do": "crash", "text": "…"}`, `{"do": "research",
//!   "name": "automation"}`, or `{"do": "command", "text": "/server-save"}` (any console line).
//!   `at_ms` counts from the moment the game is ready (`CreatingGame→InGame`).
//! * `FACTORIO_STANDIN_CONTROL=<path>`: a UNIX socket accepting the same console lines (e.g.
//!   `/standin join Alice`), one per line, each answered with its output and a blank line.
//!
//! The `/standin` verbs raise the events the real game raises for what they simulate:
//! `join <name>` → `on_player_created` (first visit) + `on_player_joined_game`; `leave <name>
//! [--silent] [--reason quit|dropped|afk|…]` → `on_pre_player_left_game` + `on_player_left_game`;
//! `ban|unban|promote|demote <name>` (as the console commands, which raise them too);
//! `chat <name> <text>` → `on_console_chat`; `research <tech> [level] [progress]` → progress < 1:
//! current research + `on_research_started`, else `on_research_finished`; `tick <n>` runs n ticks
//! of `on_tick`/`on_nth_tick`; `subspace put|request <item> <count> [quality]` drives the
//! stand-in Subspace Storage mod (`subspace count` reads it, `subspace orders-then-hang <ms>` sends
//! its orders and hangs the game thread); `give <player> <item> <count>` puts items into a
//! player's character and `inventory <player>` prints the player's controller and items as JSON.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::server::{Msg, Origin};

fn to_console_line(v: &Value) -> Option<String> {
    let verb = v.get("do")?.as_str()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    Some(match verb {
        "command" | "console" => s("text"),
        "crash" => format!("/standin crash {}", s("text"))
            .trim_end()
            .to_string(),
        "chat" | "command_as" => format!("/standin chat {} {}", s("name"), s("text")),
        "leave" if v.get("silent").and_then(|b| b.as_bool()).unwrap_or(false) => {
            format!("/standin leave {} --silent", s("name"))
        }
        "refuse" => format!("/standin refuse {} {}", s("name"), s("reason")),
        "tick" => format!(
            "/standin tick {}",
            v.get("n").and_then(|n| n.as_u64()).unwrap_or(0)
        ),
        other => format!("/standin {other} {} {}", s("name"), s("text"))
            .trim_end()
            .to_string(),
    })
}

pub fn spawn(tx: mpsc::Sender<Msg>) {
    if let Ok(path) = std::env::var("FACTORIO_STANDIN_SCRIPT") {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(text) = tokio::fs::read_to_string(&path).await else {
                return;
            };
            let start = tokio::time::Instant::now();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let at = v.get("at_ms").and_then(|a| a.as_u64()).unwrap_or(0);
                tokio::time::sleep_until(start + Duration::from_millis(at)).await;
                if let Some(cmd) = to_console_line(&v)
                    && tx
                        .send(Msg::Command {
                            text: cmd,
                            origin: Origin::Script,
                            reply: None,
                        })
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    if let Ok(path) = std::env::var("FACTORIO_STANDIN_CONTROL") {
        let _ = std::fs::remove_file(&path);
        let Ok(listener) = tokio::net::UnixListener::bind(&path) else {
            return;
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        let (otx, orx) = oneshot::channel();
                        if tx
                            .send(Msg::Command {
                                text: l,
                                origin: Origin::Script,
                                reply: Some(otx),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        let out = orx.await.unwrap_or_default();
                        if w.write_all(format!("{out}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }
}
