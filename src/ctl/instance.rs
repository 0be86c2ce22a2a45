//! `ctl instance …`: the lifecycle of instances. Start, stop and restart wait: the controller
//! replies once the instance is running (or stopped), and meanwhile a spinner on a terminal
//! shows the instance's latest log line.

use super::client::{Client, seg};
use super::output::{Output, Style, Table, cell, time_ms, write_stdout};
use super::{InstanceCommand, InstanceConfigCommand, ScheduleCommand};
use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::future::Future;
use std::time::Duration;

pub async fn run(client: &Client, out: &Output, cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::List => {
            let list = client
                .get("/instances")
                .await
                .context("listing instances")?;
            out.print(&list, |list| table(out, list))
        }
        InstanceCommand::Show { instance } => {
            let view = get(client, &instance).await?;
            out.print(&view, |v| show(out, v))
        }
        InstanceCommand::Create {
            name,
            config_json,
            set,
        } => {
            let mut cfg = match config_json {
                Some(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(map)) => map,
                    _ => anyhow::bail!(
                        "--config must be a JSON object, e.g. '{{\"auto_start\":true}}'"
                    ),
                },
                None => Map::new(),
            };
            let types = if set.is_empty() {
                Types(Value::Null)
            } else {
                Types::fetch(client).await?
            };
            for pair in &set {
                let (key, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--set {pair}: expected KEY=VALUE"))?;
                set_path(&mut cfg, key, Some(types.parse(key, value)))?;
            }
            let view = client
                .post("/instances", &json!({ "name": name, "config": cfg }))
                .await
                .with_context(|| format!("creating instance '{name}'"))?;
            out.print(&view, |v| {
                format!(
                    "Created instance {} (id {})",
                    cell(&v["name"]),
                    cell(&v["id"])
                )
            })
        }
        InstanceCommand::Config(InstanceConfigCommand::Show { instance }) => {
            let view = get(client, &instance).await?;
            let config = view["config"].clone();
            out.print(&config, |_| marked_config(&view))
        }
        InstanceCommand::Config(InstanceConfigCommand::Set {
            instance,
            key,
            value,
            unset,
        }) => {
            let value = match value.filter(|_| !unset) {
                Some(text) => Types::fetch(client).await?.parse(&key, &text),
                None => Value::Null,
            };
            config_set(client, out, &instance, &key, value).await
        }
        InstanceCommand::Assign { instance, host } => {
            let body = match &host {
                Some(h) => json!({ "host": host_ref(h) }),
                None => json!({}),
            };
            let view = client
                .post(&format!("/instances/{}/assign", seg(&instance)), &body)
                .await
                .with_context(|| format!("assigning instance '{instance}'"))?;
            out.print(&view, |v| {
                format!(
                    "Assigned instance {} to host {} ({})",
                    cell(&v["name"]),
                    cell(&v["host"]),
                    out.status(v["status"].as_str().unwrap_or("?"))
                )
            })
        }
        InstanceCommand::Start {
            instance,
            save,
            timeout,
        } => {
            let body = match &save {
                Some(s) => json!({ "save": s }),
                None => json!({}),
            };
            let view =
                lifecycle(client, out, &instance, "start", &body, "Starting", timeout).await?;
            out.print(&view, |v| {
                format!(
                    "Instance {} is {} on port {}",
                    cell(&v["name"]),
                    out.status(v["status"].as_str().unwrap_or("?")),
                    cell(&v["game_port"])
                )
            })
        }
        InstanceCommand::Stop { instance, timeout } => {
            let view = lifecycle(
                client,
                out,
                &instance,
                "stop",
                &json!({}),
                "Stopping",
                timeout,
            )
            .await?;
            out.print(&view, |v| {
                format!(
                    "Instance {} is {} (saved)",
                    cell(&v["name"]),
                    out.status(v["status"].as_str().unwrap_or("?"))
                )
            })
        }
        InstanceCommand::Restart { instance, timeout } => {
            let view = lifecycle(
                client,
                out,
                &instance,
                "restart",
                &json!({}),
                "Restarting",
                timeout,
            )
            .await?;
            out.print(&view, |v| {
                format!(
                    "Instance {} restarted: {} on port {}",
                    cell(&v["name"]),
                    out.status(v["status"].as_str().unwrap_or("?")),
                    cell(&v["game_port"])
                )
            })
        }
        InstanceCommand::StartAll { host } => bulk(client, out, "start", host).await,
        InstanceCommand::StopAll { host } => bulk(client, out, "stop", host).await,
        InstanceCommand::RestartAll { host } => bulk(client, out, "restart", host).await,
        InstanceCommand::Schedule(cmd) => schedule(client, out, cmd).await,
        InstanceCommand::Kill { instance } => {
            let view =
                lifecycle(client, out, &instance, "kill", &json!({}), "Killing", None).await?;
            out.print(&view, |v| {
                format!(
                    "Killed instance {} (not saved): {}",
                    cell(&v["name"]),
                    out.status(v["status"].as_str().unwrap_or("?"))
                )
            })
        }
        InstanceCommand::Delete { instance } => {
            let reply = client
                .delete(&format!("/instances/{}", seg(&instance)))
                .await
                .with_context(|| format!("deleting instance '{instance}'"))?;
            out.print(&reply, |_| format!("Deleted instance {instance}"))
        }
        InstanceCommand::Rcon { instance, command } => {
            let command = command.join(" ");
            let reply = client
                .post(
                    &format!("/instances/{}/rcon", seg(&instance)),
                    &json!({ "command": command }),
                )
                .await
                .with_context(|| format!("sending RCON to instance '{instance}'"))?;
            out.print(&reply, |r| {
                r["output"].as_str().unwrap_or_default().to_string()
            })
        }
        InstanceCommand::Logs {
            instance,
            lines,
            follow,
        } => logs(client, out, &instance, lines, follow).await,
    }
}

/// A host given on the command line: its id when it is a number, else its name.
fn host_ref(h: &str) -> Value {
    h.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(h))
}

async fn get(client: &Client, instance: &str) -> anyhow::Result<Value> {
    client
        .get(&format!("/instances/{}", seg(instance)))
        .await
        .with_context(|| format!("getting instance '{instance}'"))
}

fn table(out: &Output, list: &Value) -> String {
    let mut t = Table::new(&["ID", "NAME", "HOST", "STATUS", "PORT", "PLAYERS"]);
    for i in list.as_array().into_iter().flatten() {
        t.row(vec![
            cell(&i["id"]),
            cell(&i["name"]),
            cell(&i["host"]),
            out.status(i["status"].as_str().unwrap_or("?")),
            cell(&i["game_port"]),
            i["players_online"]
                .as_array()
                .map_or(0, Vec::len)
                .to_string(),
        ]);
    }
    t.render(
        out,
        "No instances. Create one with `clustorio ctl instance create <name>`.",
    )
}

fn show(out: &Output, v: &Value) -> String {
    let host = match (&v["host"], &v["host_id"]) {
        (Value::Null, _) => "-".to_string(),
        (name, id) => format!("{} (id {})", cell(name), cell(id)),
    };
    let config = marked_config(v)
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let label = |s: &str| out.paint(Style::Bold, &format!("{s:<9}"));
    format!(
        "{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{}\n{config}\n",
        label("name"),
        cell(&v["name"]),
        label("id"),
        cell(&v["id"]),
        label("host"),
        host,
        label("status"),
        out.status(v["status"].as_str().unwrap_or("?")),
        label("port"),
        cell(&v["game_port"]),
        label("players"),
        cell(&v["players_online"]),
        label("created"),
        time_ms(&v["created_at"]),
        label("updated"),
        time_ms(&v["updated_at"]),
        label("config"),
    )
}

/// A config value from the command line, for a key the schema does not know: JSON if it
/// parses, else the text as a string (the controller then names what it expects).
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// The controller's instance settings schema: command-line text becomes a value of the
/// setting's type. Text that does not parse is sent as it is, for the controller to refuse with
/// the field's rule.
struct Types(Value);

impl Types {
    async fn fetch(client: &Client) -> anyhow::Result<Types> {
        let schema = client
            .get("/config/schema")
            .await
            .context("reading the settings schema")?;
        Ok(Types(schema["instance"].clone()))
    }

    fn parse(&self, key: &str, text: &str) -> Value {
        let kind = self
            .0
            .as_array()
            .and_then(|fields| fields.iter().find(|f| f["name"] == key))
            .and_then(|f| f["type"].as_str());
        match kind {
            Some(kind) => {
                crate::config::schema::parse_as(kind, text).unwrap_or_else(|| json!(text))
            }
            None => parse_value(text),
        }
    }
}

/// The config as JSON, with each secret shown as `<secret: set>` or `<secret: not set>` in
/// its place and the changes waiting for a restart listed under it.
fn marked_config(view: &Value) -> String {
    let mut config = match &view["config"] {
        Value::Object(m) => Value::Object(m.clone()),
        _ => json!({}),
    };
    for (name, state) in view["secrets"].as_object().into_iter().flatten() {
        let mark = format!("<secret: {}>", state.as_str().unwrap_or("?"));
        crate::config::schema::set_path(&mut config, name, json!(mark));
    }
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    let pending: Vec<&str> = view["pending_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !pending.is_empty() {
        text.push_str(&format!("\nwaiting for a restart: {}", pending.join(", ")));
    }
    text
}

/// Sets (or with `None` removes) a dotted key inside `config`, creating objects on the way.
fn set_path(
    config: &mut Map<String, Value>,
    key: &str,
    value: Option<Value>,
) -> anyhow::Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    anyhow::ensure!(
        parts.iter().all(|p| !p.is_empty()),
        "config key '{key}' has an empty part"
    );
    let (last, parents) = parts
        .split_last()
        .with_context(|| format!("config key '{key}' is empty"))?;
    let mut node = config;
    for (depth, part) in parents.iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        node = match entry {
            Value::Object(map) => map,
            _ => anyhow::bail!(
                "config key '{}' is not an object",
                parts[..=depth].join(".")
            ),
        };
    }
    match value {
        Some(v) => {
            node.insert(last.to_string(), v);
        }
        None => {
            node.remove(*last);
        }
    }
    Ok(())
}

/// `instance config set`: the key becomes a JSON merge patch (`null` with --unset: back to the
/// default), which the controller checks and merges.
async fn config_set(
    client: &Client,
    out: &Output,
    instance: &str,
    key: &str,
    value: Value,
) -> anyhow::Result<()> {
    let unset = value.is_null();
    let mut change = Map::new();
    set_path(&mut change, key, Some(value))?;
    let view = client
        .patch(
            &format!("/instances/{}", seg(instance)),
            &json!({ "config": change }),
        )
        .await
        .with_context(|| format!("changing the config of instance '{instance}'"))?;
    out.print(&view, |v| {
        let name = cell(&v["name"]);
        if unset {
            return format!("{name}: {key} removed");
        }
        let restart = if v["pending_restart"]
            .as_array()
            .is_some_and(|p| p.iter().any(|k| k == key))
        {
            " (restart to apply)"
        } else {
            ""
        };
        match (pointer(&v["config"], key), v["secrets"][key].as_str()) {
            (_, Some(state)) => format!("{name}: {key} = <secret: {state}>{restart}"),
            (Some(now), None) => format!("{name}: {key} = {now}{restart}"),
            (None, None) => format!("{name}: {key} removed"),
        }
    })
}

fn pointer<'a>(config: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(config, |node, part| node.get(part))
}

/// Sends a lifecycle request (start, stop, restart, kill) and waits for its reply, with a
/// spinner showing the instance's newest log line while it lasts.
async fn lifecycle(
    client: &Client,
    out: &Output,
    instance: &str,
    action: &str,
    body: &Value,
    doing: &str,
    timeout: Option<u64>,
) -> anyhow::Result<Value> {
    let path = format!("/instances/{}/{action}", seg(instance));
    let request = async {
        match timeout {
            None => client.post(&path, body).await,
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs), client.post(&path, body))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "gave up waiting after {secs} s; the instance may still change (see `clustorio ctl instance show {instance}`)"
                    ))
                }),
        }
    };
    waiting(
        client,
        out,
        instance,
        &format!("{doing} {instance}"),
        request,
    )
    .await
    .with_context(|| format!("{} instance '{instance}'", doing.to_lowercase()))
}

async fn waiting<T>(
    client: &Client,
    out: &Output,
    instance: &str,
    message: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    if !out.progress {
        return work.await;
    }
    let spinner = out.spinner(message);
    let tail = {
        let (client, spinner, instance, message) = (
            client.clone(),
            spinner.clone(),
            instance.to_string(),
            message.to_string(),
        );
        tokio::spawn(async move {
            let path = format!("/instances/{}/logs?follow=1", seg(&instance));
            let Ok(resp) = client.stream(&path).await else {
                return;
            };
            let mut body = resp.bytes_stream();
            let mut pending = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                pending.extend_from_slice(&chunk);
                if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
                    let text = String::from_utf8_lossy(&pending[..end]).to_string();
                    if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
                        let short: String = last.trim().chars().take(70).collect();
                        spinner.set_message(format!("{message}: {short}"));
                    }
                    pending.drain(..=end);
                }
            }
        })
    };
    let result = work.await;
    tail.abort();
    spinner.finish_and_clear();
    result
}

/// `instance logs [-n N] [-f]`.
async fn logs(
    client: &Client,
    out: &Output,
    instance: &str,
    lines: Option<u64>,
    follow: bool,
) -> anyhow::Result<()> {
    if !follow {
        let path = match lines {
            Some(n) => format!("/instances/{}/logs?lines={n}", seg(instance)),
            None => format!("/instances/{}/logs", seg(instance)),
        };
        let reply = client
            .get(&path)
            .await
            .with_context(|| format!("reading the log of instance '{instance}'"))?;
        return out.print(&reply, |r| {
            r["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| l.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    // Following a game that is not running waits for lines that may never come: say so.
    let info = client
        .get(&format!("/instances/{}", seg(instance)))
        .await
        .with_context(|| format!("following the log of instance '{instance}'"))?;
    if info["host"].is_null() {
        eprintln!(
            "instance '{instance}' is not assigned to a host: no lines until it is assigned \
             (`clustorio ctl instance assign {instance}`) and started; waiting, Ctrl-C to stop"
        );
    } else if info["status"] != json!("running") && info["status"] != json!("starting") {
        eprintln!(
            "instance '{instance}' is {}: no new lines until it starts; waiting, Ctrl-C to stop",
            info["status"].as_str().unwrap_or("not running")
        );
    }
    let resp = client
        .stream(&format!("/instances/{}/logs?follow=1", seg(instance)))
        .await
        .with_context(|| format!("following the log of instance '{instance}'"))?;
    let mut body = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("following the log of instance '{instance}'"))?;
        pending.extend_from_slice(&chunk);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let complete: Vec<u8> = pending.drain(..=end).collect();
        let text = String::from_utf8_lossy(&complete);
        let printed = if out.json {
            // JSON lines: one {"line": …} object per log line.
            text.lines()
                .map(|l| format!("{}\n", json!({ "line": l })))
                .collect::<String>()
        } else {
            text.to_string()
        };
        write_stdout(&printed)?;
    }
    Ok(())
}

/// `instance start-all | stop-all | restart-all`: one line per instance, exit 1 if any failed.
async fn bulk(
    client: &Client,
    out: &Output,
    action: &str,
    host: Option<String>,
) -> anyhow::Result<()> {
    let what = match &host {
        Some(h) => format!("the instances of host '{h}'"),
        None => "every instance".to_string(),
    };
    let spinner = out.spinner(format!("{action}: {what}"));
    let result = client
        .post(
            "/instances/bulk",
            &json!({ "action": action, "host": host }),
        )
        .await;
    spinner.finish_and_clear();
    let v = result.with_context(|| format!("{action} of {what}"))?;
    out.print(&v, |v| {
        let mut t = Table::new(&["INSTANCE", "RESULT"]);
        for r in v["results"].as_array().into_iter().flatten() {
            let result = if r["ok"] == json!(true) {
                out.status(r["status"].as_str().unwrap_or("?"))
            } else {
                format!("failed: {}", r["error"].as_str().unwrap_or("?"))
            };
            t.row(vec![cell(&r["instance"]), result]);
        }
        t.render(out, &format!("Nothing to {action}."))
    })?;
    if v["failed"].as_u64().unwrap_or(0) > 0 {
        anyhow::bail!(
            "{} of {} instances failed to {action}",
            v["failed"],
            v["total"]
        );
    }
    Ok(())
}

async fn schedule(client: &Client, out: &Output, cmd: ScheduleCommand) -> anyhow::Result<()> {
    let show = |v: &Value| -> String {
        let s = &v["schedule"];
        if s.is_null() {
            return format!("Instance {} has no restart schedule.", cell(&v["instance"]));
        }
        let when = match s["daily_at"].as_str() {
            Some(d) => format!("daily at {d} UTC"),
            None => format!("every {} hours", cell(&s["every_hours"])),
        };
        format!(
            "Instance {} restarts {when}, warned {} minutes ahead{}.\nNext: {} UTC. Last: {}",
            cell(&v["instance"]),
            cell(&s["warn_minutes"]),
            if s["skip_if_players"] == json!(true) {
                ", skipped while players are online"
            } else {
                ""
            },
            time_ms(&s["next_run_ms"]),
            s["last_result"].as_str().unwrap_or("never run"),
        )
    };
    let v = match cmd {
        ScheduleCommand::Show { instance } => client
            .get(&format!("/instances/{}/schedule", seg(&instance)))
            .await
            .with_context(|| format!("reading the schedule of instance '{instance}'"))?,
        ScheduleCommand::Set {
            instance,
            daily,
            every_hours,
            warn_minutes,
            skip_if_players,
        } => client
            .call(
                reqwest::Method::PUT,
                &format!("/instances/{}/schedule", seg(&instance)),
                Some(&json!({
                    "daily_at": daily, "every_hours": every_hours,
                    "warn_minutes": warn_minutes, "skip_if_players": skip_if_players,
                })),
            )
            .await
            .with_context(|| format!("setting the schedule of instance '{instance}'"))?,
        ScheduleCommand::Clear { instance } => client
            .delete(&format!("/instances/{}/schedule", seg(&instance)))
            .await
            .with_context(|| format!("removing the schedule of instance '{instance}'"))?,
    };
    out.print(&v, show)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_keys_reach_into_objects() {
        let mut cfg = Map::new();
        set_path(&mut cfg, "server_settings.max_players", Some(json!(10))).unwrap();
        set_path(&mut cfg, "auto_start", Some(json!(true))).unwrap();
        assert_eq!(
            Value::Object(cfg.clone()),
            json!({"server_settings": {"max_players": 10}, "auto_start": true})
        );
        set_path(&mut cfg, "server_settings.max_players", None).unwrap();
        assert_eq!(cfg["server_settings"], json!({}));
        assert!(set_path(&mut cfg, "auto_start.x", Some(json!(1))).is_err());
        assert!(set_path(&mut cfg, "a..b", Some(json!(1))).is_err());
    }

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(parse_value("10"), json!(10));
        assert_eq!(parse_value("true"), json!(true));
        assert_eq!(parse_value("My server"), json!("My server"));
        assert_eq!(parse_value("[\"a.zip\"]"), json!(["a.zip"]));
    }
}
