//! `ctl inventory …` (the inventory_sync plugin): list the stored players, show one, export one
//! to a JSON file, import one from such a file (a new generation) and free a stuck lock.

use super::client::{Client, seg};
use super::output::{Output, Table, bytes, cell, time_ms};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum InventoryCommand {
    /// Every stored player: generation, size, the game holding them, last sync.
    #[command(visible_alias = "ls")]
    List,
    /// One player's inventories, quick bar and crafting queue.
    Show { player: String },
    /// Write one player's stored inventory to FILE (JSON), as `import` reads it.
    Export {
        player: String,
        /// Where to write; `-` for stdout.
        file: PathBuf,
    },
    /// Replace a player's stored inventory with FILE (JSON); stored as a new generation, so
    /// every game takes it at the player's next join. Refused while a game holds the player.
    Import { player: String, file: PathBuf },
    /// Free a player held by a game that is stuck or gone (the lock would expire by itself
    /// after `inventory_sync.player_lock_timeout` once the game stops).
    Release { player: String },
}

fn stacks(v: &Value) -> String {
    let mut out: Vec<String> = Vec::new();
    for s in v.as_array().into_iter().flatten() {
        let (name, count, quality) = (s[1].as_str(), s[2].as_i64(), s[3].as_str());
        if let (Some(n), Some(c)) = (name, count) {
            match quality {
                Some(q) if q != "normal" => out.push(format!("{n} ({q}) ×{c}")),
                _ => out.push(format!("{n} ×{c}")),
            }
        }
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}

pub async fn run(client: &Client, out: &Output, cmd: InventoryCommand) -> anyhow::Result<()> {
    match cmd {
        InventoryCommand::List => {
            let v = client
                .get("/inventories")
                .await
                .context("listing inventories")?;
            out.print(&v, |v| {
                let mut t = Table::new(&["PLAYER", "GENERATION", "SIZE", "HELD BY", "LAST SYNC"]);
                for p in v["players"].as_array().into_iter().flatten() {
                    let holder = match (&p["holder"], &p["stale_since"]) {
                        (Value::String(h), Value::Null) => h.clone(),
                        (Value::String(h), _) => format!("{h} (stopped; lock expiring)"),
                        _ => "-".into(),
                    };
                    t.row(vec![
                        cell(&p["name"]),
                        cell(&p["generation"]),
                        p["size"].as_u64().map(bytes).unwrap_or_else(|| "-".into()),
                        holder,
                        time_ms(&p["last_sync"]),
                    ]);
                }
                let s = &v["stats"];
                let mut text = t.render(out, "No inventories stored yet.");
                text.push_str(&format!(
                    "{} inventories, {} in total\n",
                    s["count"].as_u64().unwrap_or(0),
                    bytes(s["total_bytes"].as_u64().unwrap_or(0))
                ));
                text
            })
        }
        InventoryCommand::Show { player } => {
            let v = client
                .get(&format!("/inventories/{}", seg(&player)))
                .await
                .with_context(|| format!("showing {player}'s inventory"))?;
            out.print(&v, |v| {
                let d = &v["data"];
                let mut text = format!(
                    "{}  generation {}  held by {}\n",
                    cell(&v["name"]),
                    cell(&v["generation"]),
                    v["holder"].as_str().unwrap_or("-")
                );
                for key in ["armor", "main", "guns", "ammo", "trash"] {
                    text.push_str(&format!("  {key:<6} {}\n", stacks(&d["inventories"][key])));
                }
                let bar: Vec<String> = d["quick_bar"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|q| Some(format!("{}:{}", q[0].as_i64()?, q[1].as_str()?)))
                    .collect();
                text.push_str(&format!(
                    "  quick bar {}\n",
                    if bar.is_empty() {
                        "-".into()
                    } else {
                        bar.join(" ")
                    }
                ));
                text
            })
        }
        InventoryCommand::Export { player, file } => {
            let v = client
                .get(&format!("/inventories/{}", seg(&player)))
                .await
                .with_context(|| format!("exporting {player}'s inventory"))?;
            let text = serde_json::to_string_pretty(&v["data"])?;
            if file.as_os_str() == "-" {
                super::output::write_stdout(&format!("{text}\n"))
            } else {
                crate::saves::write_atomic(&file, text.as_bytes())
                    .with_context(|| format!("writing {}", file.display()))?;
                out.print(
                    &json!({ "player": player, "file": file, "generation": v["generation"] }),
                    |_| {
                        format!(
                            "Wrote {player}'s inventory (generation {}) to {}\n",
                            cell(&v["generation"]),
                            file.display()
                        )
                    },
                )
            }
        }
        InventoryCommand::Import { player, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let data: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let v = client
                .call(
                    Method::PUT,
                    &format!("/inventories/{}", seg(&player)),
                    Some(&json!({ "data": data })),
                )
                .await
                .with_context(|| format!("importing {player}'s inventory"))?;
            out.print(&v, |v| {
                format!(
                    "Imported {player}'s inventory as generation {}\n",
                    cell(&v["generation"])
                )
            })
        }
        InventoryCommand::Release { player } => {
            let v = client
                .post(
                    &format!("/inventories/{}/release", seg(&player)),
                    &json!({}),
                )
                .await
                .with_context(|| format!("releasing {player}"))?;
            out.print(&v, |v| {
                format!(
                    "Released {player} (was held by instance {})\n",
                    cell(&v["instance_id"])
                )
            })
        }
    }
}
