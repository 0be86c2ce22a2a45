//! Cluster-wide commands: `status`, `host …`, `audit`, `permission list`, `config schema`.

use super::HostCommand;
use super::client::{Client, seg};
use super::output::{Output, Style, Table, cell, duration_s, time_ms};
use anyhow::Context;
use serde_json::{Value, json};

/// `ctl status`: the public status; with a token, host and instance counts as well.
pub async fn status(client: &Client, out: &Output) -> anyhow::Result<()> {
    let status = client
        .get("/status")
        .await
        .context("getting the controller status")?;
    if out.json {
        return out.print_json(&status);
    }
    let mut text = format!(
        "{}\ncontroller  {} at {}, up {}\n",
        out.paint(
            Style::Bold,
            status["cluster_name"].as_str().unwrap_or("cluster")
        ),
        status["version"].as_str().unwrap_or("?"),
        client.root(),
        duration_s(status["uptime_s"].as_u64().unwrap_or(0)),
    );
    if client.has_token() {
        let (hosts, instances) = tokio::join!(client.get("/hosts"), client.get("/instances"));
        // A refused token is an error, not a shorter status: print what the controller said
        // about itself, then fail. A role without the listing permission just shows less.
        for reply in [&hosts, &instances] {
            if let Err(e) = reply
                && e.downcast_ref::<super::client::ApiFailure>()
                    .is_none_or(|f| f.status != 403)
            {
                super::output::write_stdout(&text)?;
                return Err(anyhow::anyhow!("{e:#}"));
            }
        }
        if let Ok(Value::Array(hosts)) = hosts {
            let up = hosts
                .iter()
                .filter(|h| h["connected"] == json!(true))
                .count();
            text.push_str(&format!("hosts       {up} connected of {}\n", hosts.len()));
        }
        if let Ok(Value::Array(instances)) = instances {
            let running = instances
                .iter()
                .filter(|i| i["status"] == json!("running"))
                .count();
            let players: usize = instances
                .iter()
                .map(|i| i["players_online"].as_array().map_or(0, Vec::len))
                .sum();
            text.push_str(&format!(
                "instances   {running} running of {}, {players} players online\n",
                instances.len()
            ));
        }
    }
    super::output::write_stdout(&text)
}

pub async fn host(client: &Client, out: &Output, cmd: HostCommand) -> anyhow::Result<()> {
    match cmd {
        HostCommand::List => {
            let hosts = client.get("/hosts").await.context("listing hosts")?;
            out.print(&hosts, |hosts| {
                let mut t = Table::new(&[
                    "ID",
                    "NAME",
                    "STATE",
                    "VERSION",
                    "ADDRESS",
                    "INSTANCES",
                    "LAST SEEN",
                ]);
                for h in hosts.as_array().into_iter().flatten() {
                    let state = host_state(out, h);
                    let instances: Vec<Value> = h["instances"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| i["name"].clone())
                        .collect();
                    t.row(vec![
                        cell(&h["id"]),
                        cell(&h["name"]),
                        state,
                        cell(&h["version"]),
                        cell(&h["address"]),
                        cell(&Value::Array(instances)),
                        time_ms(&h["last_seen_at"]),
                    ]);
                }
                t.render(
                    out,
                    "No hosts. Start one with the join token: `clustorio ctl host join-token`.",
                )
            })
        }
        HostCommand::Show { host } => super::versions::show(client, out, &host).await,
        HostCommand::InstallFactorio {
            host,
            factorio_version,
        } => super::versions::install(client, out, &host, &factorio_version).await,
        HostCommand::RemoveFactorio {
            host,
            factorio_version,
        } => {
            let reply = client
                .delete(&format!(
                    "/hosts/{}/factorio-versions/{}",
                    seg(&host),
                    seg(&factorio_version)
                ))
                .await
                .with_context(|| {
                    format!("removing Factorio {factorio_version} from host '{host}'")
                })?;
            out.print(&reply, |r| {
                format!(
                    "Removed Factorio {} from host {host} ({})",
                    cell(&r["version"]),
                    cell(&r["removed"])
                )
            })
        }
        HostCommand::Revoke { host } => {
            let reply = client
                .post(&format!("/hosts/{}/revoke", seg(&host)), &json!({}))
                .await
                .with_context(|| format!("revoking host '{host}'"))?;
            out.print(&reply, |h| {
                format!(
                    "Revoked host {} (id {}); it can no longer connect",
                    cell(&h["name"]),
                    cell(&h["id"])
                )
            })
        }
        HostCommand::JoinToken { rotate } => {
            let reply = if rotate {
                client
                    .post("/join-token/rotate", &json!({}))
                    .await
                    .context("rotating the join token")?
            } else {
                client
                    .get("/join-token")
                    .await
                    .context("getting the join token")?
            };
            out.print(&reply, |r| cell(&r["token"]))
        }
    }
}

pub async fn audit(client: &Client, out: &Output, limit: u32) -> anyhow::Result<()> {
    let entries = client
        .get(&format!("/audit?limit={limit}"))
        .await
        .context("reading the audit log")?;
    out.print(&entries, |entries| {
        let mut t = Table::new(&["TIME (UTC)", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
        for e in entries.as_array().into_iter().flatten() {
            let detail = match &e["detail"] {
                Value::Object(m) if m.is_empty() => "-".to_string(),
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            t.row(vec![
                time_ms(&e["at"]),
                cell(&e["actor"]),
                cell(&e["action"]),
                cell(&e["target"]),
                detail,
            ]);
        }
        t.render(out, "The audit log is empty.")
    })
}

pub async fn permissions(client: &Client, out: &Output) -> anyhow::Result<()> {
    let perms = client
        .get("/permissions")
        .await
        .context("listing permissions")?;
    out.print(&perms, |perms| {
        let mut t = Table::new(&["NAME", "DEFAULT", "DESCRIPTION"]);
        for p in perms.as_array().into_iter().flatten() {
            let default = if p["grant_by_default"] == json!(true) {
                "yes"
            } else {
                "-"
            };
            t.row(vec![
                cell(&p["name"]),
                default.to_string(),
                cell(&p["description"]),
            ]);
        }
        t.render(out, "No permissions.")
    })
}

/// `ctl chat send`: a message from the console into one game or all of them.
pub async fn chat_send(
    client: &Client,
    out: &Output,
    instance: Option<String>,
    text: &str,
) -> anyhow::Result<()> {
    let mut body = json!({ "text": text });
    if let Some(i) = &instance {
        body["instance"] = match i.parse::<i64>() {
            Ok(n) => json!(n),
            Err(_) => json!(i),
        };
    }
    let r = client
        .post("/global_chat/send", &body)
        .await
        .context("sending a chat message")?;
    out.print(&r, |r| {
        let queued = r["queued"].as_u64().unwrap_or(0);
        let mut s = format!("Sent to {} game(s)", r["delivered"].as_u64().unwrap_or(0));
        if queued > 0 {
            s.push_str(&format!("; {queued} more get it when their host is back"));
        }
        s.push_str(".\n");
        s
    })
}

pub async fn plugins(client: &Client, out: &Output) -> anyhow::Result<()> {
    let plugins = client.get("/plugins").await.context("listing plugins")?;
    out.print(&plugins, |plugins| {
        let mut t = Table::new(&["NAME", "VERSION", "ENABLED", "HOSTS", "DESCRIPTION"]);
        for p in plugins.as_array().into_iter().flatten() {
            let hosts: Vec<String> = p["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    let state = if h["connected"] == json!(true) {
                        ""
                    } else {
                        ", away"
                    };
                    format!("{} ({}{state})", cell(&h["host"]), cell(&h["version"]))
                })
                .collect();
            t.row(vec![
                cell(&p["name"]),
                cell(&p["version"]),
                if p["enabled"] == json!(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
                if hosts.is_empty() {
                    "-".to_string()
                } else {
                    hosts.join(", ")
                },
                cell(&p["description"]),
            ]);
        }
        t.render(out, "No plugins are built in.")
    })
}

/// `ctl config schema`: every setting the controller declares (instance, controller, host).
pub async fn schema(client: &Client, out: &Output, kind: Option<String>) -> anyhow::Result<()> {
    let schema = client
        .get("/config/schema")
        .await
        .context("reading the settings schema")?;
    let kinds: Vec<&str> = match kind.as_deref() {
        Some(k @ ("instance" | "controller" | "host")) => vec![k],
        Some(other) => anyhow::bail!("no settings of kind '{other}': instance, controller or host"),
        None => vec!["instance", "controller", "host"],
    };
    if out.json {
        let mut picked = serde_json::Map::new();
        for k in &kinds {
            picked.insert(k.to_string(), schema[*k].clone());
        }
        return out.print_json(&Value::Object(picked));
    }
    let mut text = String::new();
    for k in kinds {
        let mut t = Table::new(&["NAME", "TYPE", "DEFAULT", "FLAGS", "DESCRIPTION"]);
        for f in schema[k].as_array().into_iter().flatten() {
            let mut flags = Vec::new();
            if f["secret"] == json!(true) {
                flags.push("secret");
            }
            if f["restart_required"] == json!(true) {
                flags.push("restart");
            }
            t.row(vec![
                cell(&f["name"]),
                cell(&f["type"]),
                cell(&f["default"]),
                if flags.is_empty() {
                    "-".to_string()
                } else {
                    flags.join(",")
                },
                cell(&f["description"]),
            ]);
        }
        text.push_str(&format!(
            "{}\n{}\n",
            out.paint(Style::Bold, &format!("{k} settings")),
            t.render(out, "None.")
        ));
    }
    super::output::write_stdout(&text)
}

/// `ctl research list`: research_sync's table.
pub async fn research(client: &Client, out: &Output) -> anyhow::Result<()> {
    let techs = client.get("/research").await.context("listing research")?;
    out.print(&techs, |techs| {
        let mut t = Table::new(&["TECHNOLOGY", "LEVEL", "STATE", "PROGRESS"]);
        for r in techs.as_array().into_iter().flatten() {
            let researched = r["researched"] == json!(true);
            let progress = r["progress"].as_f64().unwrap_or(0.0);
            let state = if researched {
                "researched"
            } else if progress > 0.0 {
                "in progress"
            } else {
                "-"
            };
            t.row(vec![
                cell(&r["name"]),
                cell(&r["level"]),
                state.to_string(),
                if researched {
                    "-".to_string()
                } else {
                    format!("{:.1}%", progress * 100.0)
                },
            ]);
        }
        t.render(
            out,
            "No technologies known yet (no game with research_sync has started).",
        )
    })
}

/// `ctl storage list|set`: subspace_storage's pool.
pub async fn storage(
    client: &Client,
    out: &Output,
    cmd: super::StorageCommand,
) -> anyhow::Result<()> {
    let view = match cmd {
        super::StorageCommand::List => client.get("/storage").await.context("listing storage")?,
        super::StorageCommand::Resolve { host, exports } => {
            let body = json!({ "host": host, "exports": exports });
            let done = client
                .post("/storage/resolve", &body)
                .await
                .with_context(|| format!("settling what host {host} left pending"))?;
            return out.print(&done, |d| {
                format!(
                    "host {}: {} export(s) {}, {} grant(s) returned to the pool\n",
                    cell(&d["host"]),
                    cell(&d["exports"]),
                    cell(&d["exports_to"]),
                    cell(&d["grants_refunded"])
                )
            });
        }
        super::StorageCommand::Set {
            item,
            count,
            quality,
        } => {
            let body = json!({ "name": item, "count": count, "quality": quality });
            let set = client
                .post("/storage", &body)
                .await
                .with_context(|| format!("setting {item} ({quality})"))?;
            return out.print(&set, |s| {
                format!(
                    "{} ({}) is now {}\n",
                    cell(&s["name"]),
                    cell(&s["quality"]),
                    cell(&s["count"])
                )
            });
        }
    };
    out.print(&view, |v| {
        let mut t = Table::new(&["ITEM", "QUALITY", "COUNT"]);
        for r in v["items"].as_array().into_iter().flatten() {
            t.row(vec![
                cell(&r["name"]),
                cell(&r["quality"]),
                cell(&r["count"]),
            ]);
        }
        let mut text = t.render(out, "The pool is empty.");
        let grants = v["in_flight"]["grants"].as_i64().unwrap_or(0);
        if grants > 0 {
            text.push_str(&format!(
                "{grants} grant(s) on their way to games (not yet confirmed).\n"
            ));
        }
        let pending: Vec<String> = v["pending"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {} ({})",
                    cell(&r["count"]),
                    cell(&r["name"]),
                    cell(&r["quality"])
                )
            })
            .collect();
        if !pending.is_empty() {
            text.push_str(&format!(
                "Exported, waiting for their game's next save: {}.\n",
                pending.join(", ")
            ));
        }
        for h in v["pending"]["hosts"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "Host {}: {} export(s) and {} grant(s) pending{}.\n",
                h["host"].as_str().unwrap_or("(deleted)"),
                cell(&h["exports"]),
                cell(&h["grants"]),
                if h["revoked"] == true {
                    " — revoked: settle them with `ctl storage resolve`"
                } else {
                    ""
                }
            ));
        }
        text
    })
}

/// A host's state as the host list and `host show` print it.
pub(super) fn host_state(out: &Output, h: &Value) -> String {
    if h["revoked"] == json!(true) {
        out.paint(Style::Red, "revoked")
    } else if h["connected"] == json!(true) {
        out.paint(Style::Green, "connected")
    } else {
        out.paint(Style::Dim, "disconnected")
    }
}
