//! `ctl host show HOST` and `ctl host install-factorio HOST VERSION`: a host's Factorio
//! versions, and installing another one there with a byte progress bar (the host view's
//! `factorio_installing` polled while the install request runs).

use super::client::{Client, seg};
use super::output::{Output, Table, bytes, cell, time_ms};
use anyhow::Context;
use serde_json::{Value, json};
use std::time::Duration;

/// `ctl host show HOST`.
pub async fn show(client: &Client, out: &Output, host: &str) -> anyhow::Result<()> {
    let h = client
        .get(&format!("/hosts/{}", seg(host)))
        .await
        .with_context(|| format!("getting host '{host}'"))?;
    out.print(&h, |h| {
        let state = super::cluster::host_state(out, h);
        let instances: Vec<String> = h["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| cell(&i["name"]))
            .collect();
        let mut s = format!(
            "host        {} (id {})\nstate       {state}\nversion     {}\naddress     {}\nlast seen   {}\ninstances   {}\n\nFactorio versions:\n",
            cell(&h["name"]),
            cell(&h["id"]),
            cell(&h["version"]),
            cell(&h["address"]),
            time_ms(&h["last_seen_at"]),
            if instances.is_empty() {
                "none".to_string()
            } else {
                instances.join(", ")
            },
        );
        let mut t = Table::new(&["VERSION", "LAYOUT", "PATH"]);
        for (n, v) in h["factorio_versions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let version = if n == 0 {
                format!("{} (latest)", cell(&v["version"]))
            } else {
                cell(&v["version"])
            };
            t.row(vec![version, cell(&v["layout"]), cell(&v["path"])]);
        }
        s.push_str(&t.render(
            out,
            &format!(
                "none known (a disconnected host reports none); install one with `clustorio ctl host install-factorio {} VERSION`",
                cell(&h["name"])
            ),
        ));
        for i in h["factorio_installing"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "installing {}: {}\n",
                cell(&i["version"]),
                describe(i)
            ));
        }
        s
    })
}

fn describe(p: &Value) -> String {
    let stage = p["stage"].as_str().unwrap_or("starting");
    match (p["bytes"].as_u64(), p["total"].as_u64()) {
        (Some(b), Some(t)) => format!("{stage} {} of {}", bytes(b), bytes(t)),
        (Some(b), None) => format!("{stage} {}", bytes(b)),
        _ => stage.to_string(),
    }
}

/// `ctl host install-factorio HOST VERSION`.
pub async fn install(
    client: &Client,
    out: &Output,
    host: &str,
    version: &str,
) -> anyhow::Result<()> {
    let path = format!("/hosts/{}/factorio-versions", seg(host));
    let body = json!({ "version": version });
    let request = client.post(&path, &body);
    let result = if out.progress {
        let bar = out.transfer_bar(None, format!("Installing Factorio {version} on {host}"));
        let poll = {
            let (client, bar, host, version) = (
                client.clone(),
                bar.clone(),
                host.to_string(),
                version.to_string(),
            );
            tokio::spawn(async move {
                let mut sized = false;
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let Ok(h) = client.get(&format!("/hosts/{}", seg(&host))).await else {
                        continue;
                    };
                    let Some(p) = h["factorio_installing"]
                        .as_array()
                        .and_then(|l| l.iter().find(|p| p["version"] == json!(version)))
                    else {
                        continue;
                    };
                    if let (false, Some(t)) = (sized, p["total"].as_u64()) {
                        bar.set_length(t);
                        sized = true;
                    }
                    bar.set_position(p["bytes"].as_u64().unwrap_or(0));
                    bar.set_message(format!(
                        "Factorio {version} on {host}: {}",
                        p["stage"].as_str().unwrap_or("starting")
                    ));
                }
            })
        };
        let r = request.await;
        poll.abort();
        bar.finish_and_clear();
        r
    } else {
        request.await
    };
    let r = result.with_context(|| format!("installing Factorio {version} on host '{host}'"))?;
    out.print(&r, |r| {
        let checksum = match r["checksum"].as_str() {
            Some("verified") => "checksum verified".to_string(),
            Some(other) => format!("checksum {other}"),
            None => String::new(),
        };
        let again = if r["replaced"] == json!(true) {
            "; games running it switch at their next restart"
        } else {
            ""
        };
        format!(
            "Installed Factorio {} on {} in {} ({}, {checksum}){again}\n",
            cell(&r["version"]),
            cell(&r["host"]),
            cell(&r["path"]),
            bytes(r["bytes"].as_u64().unwrap_or(0)),
        )
    })
}
