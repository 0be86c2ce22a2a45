//! `ctl plugin …` for external-process plugins: token, revoke, limit, call, and their part of
//! `ctl plugin list`.

use super::client::{Client, seg};
use super::output::{Output, Table, cell, time_ms};
use anyhow::Context;
use serde_json::{Value, json};

/// `ctl plugin list`: the built-in plugins, then the external ones with their state.
pub async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    if out.json {
        let builtin = client.get("/plugins").await.context("listing plugins")?;
        let external = client
            .get("/external-plugins")
            .await
            .context("listing external plugins")?;
        return out.print_json(&json!({ "builtin": builtin, "external": external }));
    }
    super::cluster::plugins(client, out).await?;
    let external = client
        .get("/external-plugins")
        .await
        .context("listing external plugins")?;
    out.print(&external, |list| {
        let mut t = Table::new(&[
            "EXTERNAL PLUGIN",
            "VERSION",
            "STATE",
            "LAST SEEN",
            "QUEUED",
            "DROPPED",
        ]);
        for p in list.as_array().into_iter().flatten() {
            let state = if p["revoked"] == json!(true) {
                "revoked"
            } else if p["connected"] == json!(true) {
                "connected"
            } else {
                "away"
            };
            t.row(vec![
                cell(&p["name"]),
                cell(&p["version"]),
                state.to_string(),
                time_ms(&p["last_seen"]),
                cell(&p["queued"]),
                cell(&p["dropped"]),
            ]);
        }
        t.render(
            out,
            "No external plugins (create one with `ctl plugin token NAME`).",
        )
    })
}

/// `ctl plugin token NAME`: prints the new token once.
pub async fn token(client: &Client, out: &Output, name: &str) -> anyhow::Result<()> {
    let v = client
        .post(
            &format!("/external-plugins/{}/token", seg(name)),
            &json!({}),
        )
        .await
        .with_context(|| format!("creating a token for plugin {name}"))?;
    out.print(&v, |v| {
        format!(
            "{}\n(the token of plugin {name}; shown once — give it to the plugin's process)",
            cell(&v["token"])
        )
    })
}

pub async fn revoke(client: &Client, out: &Output, name: &str) -> anyhow::Result<()> {
    let v = client
        .post(
            &format!("/external-plugins/{}/revoke", seg(name)),
            &json!({}),
        )
        .await
        .with_context(|| format!("revoking plugin {name}"))?;
    out.print(&v, |_| {
        format!("Revoked plugin {name}'s token; its session was closed.")
    })
}

pub async fn limit(client: &Client, out: &Output, name: &str, per_s: u64) -> anyhow::Result<()> {
    let v = client
        .post(
            &format!("/external-plugins/{}/limit", seg(name)),
            &json!({ "messages_per_s": per_s }),
        )
        .await
        .with_context(|| format!("setting plugin {name}'s rate limit"))?;
    out.print(&v, |_| {
        format!("Plugin {name} may send {per_s} messages a second.")
    })
}

/// `ctl plugin call NAME REQUEST [JSON]`: a request the plugin declared; prints its answer.
pub async fn call(
    client: &Client,
    out: &Output,
    name: &str,
    request: &str,
    data: Option<String>,
) -> anyhow::Result<()> {
    let data: Value = match data {
        Some(text) => serde_json::from_str(&text)
            .with_context(|| format!("the request data is not valid JSON: {text}"))?,
        None => Value::Null,
    };
    let v = client
        .post(
            &format!("/external-plugins/{}/requests/{}", seg(name), seg(request)),
            &json!({ "data": data }),
        )
        .await
        .with_context(|| format!("calling {request} of plugin {name}"))?;
    out.print(&v, |v| serde_json::to_string_pretty(v).unwrap_or_default())
}
