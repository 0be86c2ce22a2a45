//! `ctl plugin upload FILE.zip`, `ctl plugin lua list`, `ctl plugin lua delete NAME`: the
//! controller's Lua-only plugins (`docs/plugins.md` §3).

use super::client::{Client, seg};
use super::output::{Output, Table, bytes, cell, time_ms};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

/// The Lua-only plugin verbs, flattened into `ctl plugin …`.
#[derive(Subcommand, Debug)]
pub enum LuaPluginCommand {
    /// Upload a Lua-only plugin (a zip with plugin.json and .lua files); replaces the same name.
    Upload {
        /// The plugin's zip file.
        file: PathBuf,
    },
    /// The uploaded Lua-only plugins.
    #[command(subcommand)]
    Lua(LuaCommand),
}

#[derive(Subcommand, Debug)]
pub enum LuaCommand {
    /// List the uploaded Lua-only plugins.
    #[command(visible_alias = "ls")]
    List,
    /// Delete a Lua-only plugin (its key-value data is kept); games drop it at their next start.
    Delete {
        /// The plugin's name.
        name: String,
    },
}

pub async fn run(client: &Client, out: &Output, cmd: LuaPluginCommand) -> anyhow::Result<()> {
    match cmd {
        LuaPluginCommand::Upload { file } => {
            let data = tokio::fs::read(&file)
                .await
                .with_context(|| format!("reading {}", file.display()))?;
            let len = data.len() as u64;
            let rec = client
                .put_body("/plugins/lua", reqwest::Body::from(data), len)
                .await
                .with_context(|| format!("uploading Lua-only plugin {}", file.display()))?;
            out.print(&rec, |r| {
                format!(
                    "Uploaded Lua-only plugin {} {} ({}, sha256 {})\n",
                    cell(&r["plugin"]),
                    cell(&r["version"]),
                    bytes(r["size"].as_u64().unwrap_or(0)),
                    r["sha256"].as_str().unwrap_or("-")
                )
            })
        }
        LuaPluginCommand::Lua(LuaCommand::List) => {
            let list = client
                .get("/plugins/lua")
                .await
                .context("listing Lua-only plugins")?;
            out.print(&list, |list| {
                let mut t = Table::new(&["NAME", "VERSION", "FILES", "SHA256", "UPLOADED (UTC)"]);
                for p in list.as_array().into_iter().flatten() {
                    let sha: String = p["sha256"]
                        .as_str()
                        .unwrap_or("-")
                        .chars()
                        .take(12)
                        .collect();
                    t.row(vec![
                        cell(&p["plugin"]),
                        cell(&p["version"]),
                        p["files"].as_array().map_or(0, Vec::len).to_string(),
                        sha,
                        time_ms(&p["uploaded_at"]),
                    ]);
                }
                t.render(
                    out,
                    "No Lua-only plugins. Add one with `clustorio ctl plugin upload <zip>`.",
                )
            })
        }
        LuaPluginCommand::Lua(LuaCommand::Delete { name }) => {
            let rec = client
                .delete(&format!("/plugins/lua/{}", seg(&name)))
                .await
                .with_context(|| format!("deleting Lua-only plugin '{name}'"))?;
            out.print(&rec, |r| {
                format!("Deleted Lua-only plugin {}\n", cell(&r["plugin"]))
            })
        }
    }
}
