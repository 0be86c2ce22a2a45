//! `ctl mod search|install|updates`: the Factorio mod portal through the controller
//! (`/api/v1/mod_portal/…`, docs/api.md "Mod portal").

use super::client::{Client, seg};
use super::output::{Output, Table, bytes, cell};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub enum PortalCommand {
    /// Search the mod portal by name or title (for one Factorio version).
    Search {
        /// Words in the mod's name or title; empty: the most downloaded.
        #[arg(default_value = "")]
        query: String,
        /// Factorio version (major.minor), e.g. 2.0; default: the controller's mod_portal.factorio_version.
        #[arg(long)]
        factorio_version: Option<String>,
        /// At most this many results.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Download a mod and its required dependencies from the portal into the mod store.
    Install {
        /// The mod's portal name, e.g. flib.
        name: String,
        /// A release, e.g. 0.15.0 (default: the newest for the Factorio version).
        #[arg(long)]
        release: Option<String>,
        /// Factorio version (major.minor) the releases must be built for.
        #[arg(long)]
        factorio_version: Option<String>,
    },
    /// Check the mods in the store for newer releases on the portal.
    Updates {
        /// Factorio version (major.minor) the releases must be built for.
        #[arg(long)]
        factorio_version: Option<String>,
    },
}

pub async fn run(client: &Client, out: &Output, cmd: PortalCommand) -> anyhow::Result<()> {
    match cmd {
        PortalCommand::Search {
            query,
            factorio_version,
            limit,
        } => {
            let mut path = format!("/mod_portal/search?q={}&limit={limit}", seg(&query));
            if let Some(v) = &factorio_version {
                path.push_str(&format!("&factorio_version={}", seg(v)));
            }
            let r = client
                .get(&path)
                .await
                .context("searching the mod portal")?;
            out.print(&r, |r| {
                let mut t = Table::new(&["NAME", "TITLE", "LATEST", "FACTORIO", "DOWNLOADS"]);
                for m in r["results"].as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(&m["name"]),
                        cell(&m["title"]),
                        cell(&m["latest_version"]),
                        cell(&m["factorio_version"]),
                        cell(&m["downloads_count"]),
                    ]);
                }
                let mut s = t.render(
                    out,
                    &format!(
                        "No mod for Factorio {} matches \"{query}\".",
                        cell(&r["factorio_version"])
                    ),
                );
                if r["total"].as_u64().unwrap_or(0)
                    > r["results"].as_array().map_or(0, |a| a.len() as u64)
                {
                    s.push_str(&format!("({} matches in all)\n", cell(&r["total"])));
                }
                s
            })
        }
        PortalCommand::Install {
            name,
            release,
            factorio_version,
        } => {
            let mut body = json!({ "name": name });
            if let Some(v) = release {
                body["version"] = json!(v);
            }
            if let Some(v) = factorio_version {
                body["factorio_version"] = json!(v);
            }
            let spinner = out.spinner(format!("Installing {name} from the mod portal"));
            let r = client.post("/mod_portal/install", &body).await;
            spinner.finish_and_clear();
            let r = r.with_context(|| format!("installing mod '{name}' from the portal"))?;
            out.print(&r, |r| {
                let mut s = String::new();
                for m in r["installed"].as_array().into_iter().flatten() {
                    let why = match m["needed_by"].as_str() {
                        Some(by) => format!(", needed by {by}"),
                        None => String::new(),
                    };
                    s.push_str(&format!(
                        "Installed {} ({}{why})\n",
                        cell(&m["file"]),
                        bytes(m["size"].as_u64().unwrap_or(0))
                    ));
                }
                for m in r["already_stored"].as_array().into_iter().flatten() {
                    s.push_str(&format!("Already in the store: {}\n", cell(&m["file"])));
                }
                s
            })
        }
        PortalCommand::Updates { factorio_version } => {
            let mut path = "/mod_portal/updates".to_string();
            if let Some(v) = &factorio_version {
                path.push_str(&format!("?factorio_version={}", seg(v)));
            }
            let r = client
                .get(&path)
                .await
                .context("checking the mod store for updates")?;
            out.print(&r, |r| {
                let mut t = Table::new(&["NAME", "STORED", "LATEST", "UPDATE"]);
                for m in r["mods"].as_array().into_iter().flatten() {
                    let update = if m["on_portal"] == Value::Bool(false) {
                        "not on the portal".to_string()
                    } else if m["update_available"] == Value::Bool(true) {
                        format!("clustorio ctl mod install {}", cell(&m["name"]))
                    } else {
                        "-".to_string()
                    };
                    t.row(vec![
                        cell(&m["name"]),
                        cell(&m["installed"]),
                        cell(&m["latest"]),
                        update,
                    ]);
                }
                t.render(out, "The mod store is empty.")
            })
        }
    }
}
