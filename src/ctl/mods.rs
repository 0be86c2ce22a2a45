//! `ctl mod search|install|updates`: the Factorio mod portal through the controller
//! (`/api/v1/mod_portal/…`, docs/api.md "Mod portal"), and `ctl mod pack …` (mod packs).

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
        /// Factorio version (major.minor), e.g. 2.0; default: the controller's mod_portal_factorio_version.
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
    /// Mod packs: named sets of mods with their settings, for instances' `mod_pack` setting.
    #[command(subcommand)]
    Pack(PackCommand),
}

#[derive(Subcommand, Debug)]
pub enum PackCommand {
    /// List the mod packs.
    #[command(visible_alias = "ls")]
    List,
    /// Show one pack's mods.
    Show {
        /// The pack's name.
        pack: String,
    },
    /// Create a pack: --mod NAME[@VERSION][:off] for each mod.
    Create {
        /// The pack's name.
        pack: String,
        /// A mod: NAME, NAME@1.2.3, or with :off to list it disabled.
        #[arg(long = "mod")]
        mods: Vec<String>,
        /// Factorio version (major.minor) its mods are for.
        #[arg(long)]
        factorio_version: Option<String>,
        /// A mod-settings.dat to carry with the pack.
        #[arg(long)]
        settings: Option<std::path::PathBuf>,
    },
    /// Delete a pack.
    Delete {
        /// The pack's name.
        pack: String,
    },
}

fn pack_mod(spec: &str) -> Value {
    let (spec, enabled) = match spec.strip_suffix(":off") {
        Some(s) => (s, false),
        None => (spec, true),
    };
    match spec.split_once('@') {
        Some((n, v)) => json!({ "name": n, "version": v, "enabled": enabled }),
        None => json!({ "name": spec, "enabled": enabled }),
    }
}

fn pack_table(out: &Output, p: &Value) -> String {
    let mut t = Table::new(&["MOD", "VERSION", "ENABLED"]);
    for m in p["mods"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&m["name"]),
            m["version"].as_str().unwrap_or("newest").to_string(),
            if m["enabled"] == Value::Bool(false) {
                "no"
            } else {
                "yes"
            }
            .to_string(),
        ]);
    }
    format!(
        "Mod pack {} (Factorio {}, mod-settings.dat: {})\n{}",
        cell(&p["name"]),
        cell(&p["factorio_version"]),
        match p["settings_size"].as_u64() {
            Some(0) | None => "none".to_string(),
            Some(n) => bytes(n),
        },
        t.render(out, "It has no mods.")
    )
}

async fn pack(client: &Client, out: &Output, cmd: PackCommand) -> anyhow::Result<()> {
    match cmd {
        PackCommand::List => {
            let r = client
                .get("/mod_packs")
                .await
                .context("listing mod packs")?;
            out.print(&r, |r| {
                let mut t = Table::new(&["NAME", "FACTORIO", "MODS", "SETTINGS"]);
                for p in r.as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(&p["name"]),
                        cell(&p["factorio_version"]),
                        p["mods"].as_array().map_or(0, |m| m.len()).to_string(),
                        bytes(p["settings_size"].as_u64().unwrap_or(0)),
                    ]);
                }
                t.render(out, "No mod packs. Create one with `clustorio ctl mod pack create NAME --mod flib`.")
            })
        }
        PackCommand::Show { pack } => {
            let p = client
                .get(&format!("/mod_packs/{}", seg(&pack)))
                .await
                .with_context(|| format!("reading mod pack '{pack}'"))?;
            out.print(&p, |p| pack_table(out, p))
        }
        PackCommand::Create {
            pack,
            mods,
            factorio_version,
            settings,
        } => {
            let mut body = json!({
                "name": pack,
                "mods": mods.iter().map(|m| pack_mod(m)).collect::<Vec<_>>(),
            });
            if let Some(v) = factorio_version {
                body["factorio_version"] = json!(v);
            }
            if let Some(path) = settings {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                body["settings_base64"] = json!(crate::saves::encode_base64(&data));
            }
            let p = client
                .post("/mod_packs", &body)
                .await
                .with_context(|| format!("creating mod pack '{pack}'"))?;
            out.print(&p, |p| pack_table(out, p))
        }
        PackCommand::Delete { pack } => {
            let r = client
                .delete(&format!("/mod_packs/{}", seg(&pack)))
                .await
                .with_context(|| format!("deleting mod pack '{pack}'"))?;
            out.print(&r, |_| format!("Deleted mod pack {pack}\n"))
        }
    }
}

pub async fn run(client: &Client, out: &Output, cmd: PortalCommand) -> anyhow::Result<()> {
    match cmd {
        PortalCommand::Pack(cmd) => pack(client, out, cmd).await,
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
