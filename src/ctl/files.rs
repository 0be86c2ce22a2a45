//! `ctl save …` and `ctl mod …`: files streamed to and from the controller with a progress bar
//! on a terminal. Downloads go to `<file>.part` and are renamed when complete, so an interrupted
//! download never leaves a truncated zip under the real name.

use super::client::{Client, file_body, seg};
use super::output::{Output, Table, bytes, cell, time_ms};
use super::{ModCommand, SaveCommand};
use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub async fn save(client: &Client, out: &Output, cmd: SaveCommand) -> anyhow::Result<()> {
    let cmd_kind = match &cmd {
        SaveCommand::Rename { .. } => "rename",
        _ => "",
    };
    match cmd {
        SaveCommand::List { instance } => {
            let saves = client
                .get(&format!("/instances/{}/saves", seg(&instance)))
                .await
                .with_context(|| format!("listing the saves of instance '{instance}'"))?;
            out.print(&saves, |saves| {
                let mut t = Table::new(&[
                    "NAME",
                    "SIZE",
                    "MODIFIED (UTC)",
                    "ON HOST",
                    "BACKUPS",
                    "STATE",
                ]);
                for s in saves.as_array().into_iter().flatten() {
                    let on_host = if s["on_host"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    };
                    let backups = match &s["backups"] {
                        Value::Array(a) => a.len().to_string(),
                        other => cell(other),
                    };
                    t.row(vec![
                        cell(&s["name"]),
                        bytes(s["size"].as_u64().unwrap_or(0)),
                        time_ms(&s["modified_ms"]),
                        on_host.to_string(),
                        backups,
                        match (s["loaded"] == json!(true), s["load_next"] == json!(true)) {
                            (true, true) => "loaded, loads next",
                            (true, false) => "loaded",
                            (false, true) => "loads next",
                            _ => "",
                        }
                        .to_string(),
                    ]);
                }
                t.render(out, "No saves.")
            })
        }
        SaveCommand::Scenarios { instance } => {
            let list = client
                .get(&format!("/instances/{}/scenarios", seg(&instance)))
                .await
                .with_context(|| format!("listing the scenarios of instance '{instance}'"))?;
            out.print(&list, |list| {
                let mut t = Table::new(&["SCENARIO", "FROM"]);
                for s in list.as_array().into_iter().flatten() {
                    t.row(vec![cell(&s["name"]), cell(&s["source"])]);
                }
                t.render(out, "No scenarios.")
            })
        }
        SaveCommand::Create {
            instance,
            name,
            seed,
            map_gen_settings,
            map_settings,
            preset,
            map_exchange_string,
            scenario,
        } => {
            let mut body = match &name {
                Some(n) => json!({ "name": n }),
                None => json!({}),
            };
            if let Some(seed) = seed {
                body["seed"] = json!(seed);
            }
            if let Some(p) = preset {
                body["preset"] = json!(p);
            }
            if let Some(s) = map_exchange_string {
                let text = if !s.contains(">>>") && std::path::Path::new(&s).is_file() {
                    std::fs::read_to_string(&s).with_context(|| format!("reading {s}"))?
                } else {
                    s
                };
                body["map_exchange_string"] = json!(text);
            }
            if let Some(s) = scenario {
                body["scenario"] = json!(s);
            }
            for (key, file) in [
                ("map_gen_settings", map_gen_settings),
                ("map_settings", map_settings),
            ] {
                if let Some(file) = file {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let value: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))?;
                    body[key] = value;
                }
            }
            let spinner = out.spinner(format!("Saving {instance}"));
            let result = client
                .post(&format!("/instances/{}/saves", seg(&instance)), &body)
                .await;
            spinner.finish_and_clear();
            let save =
                result.with_context(|| format!("creating a save of instance '{instance}'"))?;
            out.print(&save, |s| {
                format!(
                    "Created save {} ({}) of instance {instance}",
                    cell(&s["name"]),
                    bytes(s["size"].as_u64().unwrap_or(0))
                )
            })
        }
        SaveCommand::Upload {
            instance,
            file,
            name,
        } => {
            let name = match name {
                Some(n) => n,
                None => file_name(&file)?,
            };
            let save = upload(
                client,
                out,
                &file,
                &format!("/instances/{}/saves/{}", seg(&instance), seg(&name)),
            )
            .await
            .with_context(|| format!("uploading {} to instance '{instance}'", file.display()))?;
            out.print(&save, |s| {
                format!(
                    "Uploaded save {} ({}) to instance {instance}",
                    cell(&s["name"]),
                    bytes(s["size"].as_u64().unwrap_or(0))
                )
            })
        }
        SaveCommand::ScenarioUpload {
            instance,
            file,
            name,
        } => {
            let name = match name {
                Some(n) => n,
                None => {
                    let f = file_name(&file)?;
                    f.strip_suffix(".zip").map(String::from).unwrap_or(f)
                }
            };
            let scenario = upload(
                client,
                out,
                &file,
                &format!("/instances/{}/scenarios/{}", seg(&instance), seg(&name)),
            )
            .await
            .with_context(|| format!("uploading {} to instance '{instance}'", file.display()))?;
            out.print(&scenario, |s| {
                format!(
                    "Uploaded scenario {} ({}) to instance {instance}; start a game from it with: ctl save create {instance} --scenario {}",
                    cell(&s["name"]),
                    bytes(s["size"].as_u64().unwrap_or(0)),
                    cell(&s["name"])
                )
            })
        }
        SaveCommand::Backups { instance } => {
            let copies = client
                .get(&format!("/instances/{}/backups", seg(&instance)))
                .await
                .with_context(|| format!("listing the backups of instance '{instance}'"))?;
            out.print(&copies, |copies| {
                let mut t = Table::new(&["FILE", "SAVE", "SIZE", "MODIFIED (UTC)"]);
                for b in copies.as_array().into_iter().flatten() {
                    t.row(vec![
                        cell(&b["file"]),
                        cell(&b["save"]),
                        bytes(b["size"].as_u64().unwrap_or(0)),
                        time_ms(&b["modified_ms"]),
                    ]);
                }
                t.render(
                    out,
                    "No backups on the controller. Make one with `clustorio ctl save backup`.",
                )
            })
        }
        SaveCommand::Download {
            instance,
            save,
            backup,
            output,
        } => {
            let target = output.unwrap_or_else(|| PathBuf::from(&save));
            let kind = if backup { "backups" } else { "saves" };
            let size = download(
                client,
                out,
                &format!("/instances/{}/{kind}/{}", seg(&instance), seg(&save)),
                &target,
            )
            .await
            .with_context(|| format!("downloading save '{save}' of instance '{instance}'"))?;
            if target == Path::new("-") {
                return Ok(());
            }
            let reply = json!({ "file": target.display().to_string(), "size": size });
            out.print(&reply, |_| {
                format!(
                    "Downloaded {save} ({}) to {}",
                    bytes(size),
                    target.display()
                )
            })
        }
        SaveCommand::Delete { instance, save } => {
            let path = format!("/instances/{}/saves/{}", seg(&instance), seg(&save));
            let v = client
                .delete(&path)
                .await
                .with_context(|| format!("deleting save '{save}' of instance '{instance}'"))?;
            out.print(&v, |_| {
                format!("Deleted save {save} of instance {instance}")
            })
        }
        SaveCommand::Rename { instance, save, to } | SaveCommand::Copy { instance, save, to } => {
            let (verb, done) = if matches!(cmd_kind, "rename") {
                ("rename", "Renamed")
            } else {
                ("copy", "Copied")
            };
            let path = format!("/instances/{}/saves/{}/{verb}", seg(&instance), seg(&save));
            let v = client
                .post(&path, &json!({ "to": to }))
                .await
                .with_context(|| format!("{verb} of save '{save}' of instance '{instance}'"))?;
            out.print(&v, |_| {
                format!("{done} {save} to {to} on instance {instance}")
            })
        }
        SaveCommand::Use { instance, save } => {
            let path = format!("/instances/{}/saves/{}/use", seg(&instance), seg(&save));
            let v = client
                .post(&path, &json!({}))
                .await
                .with_context(|| format!("choosing save '{save}' for instance '{instance}'"))?;
            out.print(&v, |_| format!("The next start of {instance} loads {save}"))
        }
        SaveCommand::Transfer {
            instance,
            save,
            to_instance,
            as_name,
            copy,
        } => {
            let spinner = out.spinner(format!("Sending {save} to {to_instance}"));
            let path = format!(
                "/instances/{}/saves/{}/transfer",
                seg(&instance),
                seg(&save)
            );
            let result = client
                .post(
                    &path,
                    &json!({ "to_instance": to_instance, "as_name": as_name, "copy": copy }),
                )
                .await;
            spinner.finish_and_clear();
            let v = result.with_context(|| {
                format!("sending save '{save}' of '{instance}' to '{to_instance}'")
            })?;
            out.print(&v, |v| {
                format!(
                    "{} {save} of {instance} to {to_instance} as {}",
                    if copy { "Copied" } else { "Moved" },
                    cell(&v["as"])
                )
            })
        }
        SaveCommand::Restore { instance, file } => {
            let spinner = out.spinner(format!("Restoring {file} on {instance}"));
            let path = format!(
                "/instances/{}/backups/{}/restore",
                seg(&instance),
                seg(&file)
            );
            let result = client.post(&path, &json!({})).await;
            spinner.finish_and_clear();
            let v = result
                .with_context(|| format!("restoring backup '{file}' of instance '{instance}'"))?;
            out.print(&v, |v| {
                format!(
                    "Restored {file} as {} on {instance}{}",
                    cell(&v["save"]),
                    if v["restarted"] == json!(true) {
                        "; it runs again"
                    } else {
                        "; the next start loads it"
                    }
                )
            })
        }
        SaveCommand::Backup { instance } => {
            let spinner = out.spinner(format!("Backing up {instance}"));
            let result = client
                .post(&format!("/instances/{}/backup", seg(&instance)), &json!({}))
                .await;
            spinner.finish_and_clear();
            let backup = result.with_context(|| format!("backing up instance '{instance}'"))?;
            out.print(&backup, |b| {
                format!(
                    "Backed up {} ({}) of instance {instance} to the controller",
                    cell(&b["name"]),
                    bytes(b["size"].as_u64().unwrap_or(0))
                )
            })
        }
    }
}

pub async fn mods(client: &Client, out: &Output, cmd: ModCommand) -> anyhow::Result<()> {
    match cmd {
        ModCommand::List => {
            let mods = client.get("/mods").await.context("listing mods")?;
            out.print(&mods, |mods| {
                let mut t = Table::new(&["NAME", "SIZE", "SHA256", "UPLOADED (UTC)"]);
                for m in mods.as_array().into_iter().flatten() {
                    let sha: String = m["sha256"]
                        .as_str()
                        .unwrap_or("-")
                        .chars()
                        .take(12)
                        .collect();
                    t.row(vec![
                        cell(&m["name"]),
                        bytes(m["size"].as_u64().unwrap_or(0)),
                        sha,
                        time_ms(&m["uploaded_at"]),
                    ]);
                }
                t.render(
                    out,
                    "The mod store is empty. Add one with `clustorio ctl mod upload <zip>`.",
                )
            })
        }
        ModCommand::Upload { files } => {
            let mut uploaded = Vec::new();
            for file in &files {
                let name = file_name(file)?;
                let m = upload(client, out, file, &format!("/mods/{}", seg(&name)))
                    .await
                    .with_context(|| format!("uploading mod {}", file.display()))?;
                if !out.json {
                    super::output::write_stdout(&format!(
                        "Uploaded mod {} ({})\n",
                        cell(&m["name"]),
                        bytes(m["size"].as_u64().unwrap_or(0))
                    ))?;
                }
                uploaded.push(m);
            }
            if out.json {
                out.print_json(&Value::Array(uploaded))?;
            }
            Ok(())
        }
        ModCommand::Portal(cmd) => super::mods::run(client, out, cmd).await,
        ModCommand::Delete { file } => {
            let reply = client
                .delete(&format!("/mods/{}", seg(&file)))
                .await
                .with_context(|| format!("deleting mod '{file}'"))?;
            out.print(&reply, |_| format!("Deleted mod {file}"))
        }
    }
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no file name", path.display()))
}

async fn upload(client: &Client, out: &Output, file: &Path, path: &str) -> anyhow::Result<Value> {
    let len = tokio::fs::metadata(file)
        .await
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let bar = out.transfer_bar(Some(len), file_name(file)?);
    let (body, len) = file_body(file, bar.clone()).await?;
    let result = client.put_body(path, body, len).await;
    bar.finish_and_clear();
    result
}

/// Streams `path` into `target` (`-`: stdout); returns the byte count.
async fn download(client: &Client, out: &Output, path: &str, target: &Path) -> anyhow::Result<u64> {
    let resp = client.stream(path).await?;
    let total = resp.content_length();
    let mut body = resp.bytes_stream();
    if target == Path::new("-") {
        let mut stdout = tokio::io::stdout();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("receiving the file")?;
            stdout
                .write_all(&chunk)
                .await
                .context("writing to stdout")?;
            n += chunk.len() as u64;
        }
        stdout.flush().await.context("writing to stdout")?;
        return Ok(n);
    }
    let part = {
        let mut p = target.as_os_str().to_owned();
        p.push(".part");
        PathBuf::from(p)
    };
    let bar = out.transfer_bar(total, file_name(target).unwrap_or_default());
    let result = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("creating {}", part.display()))?;
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("receiving the file")?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", part.display()))?;
            n += chunk.len() as u64;
            bar.set_position(n);
        }
        if let Some(total) = total {
            anyhow::ensure!(n == total, "the transfer ended after {n} of {total} bytes");
        }
        file.sync_all()
            .await
            .with_context(|| format!("writing {}", part.display()))?;
        tokio::fs::rename(&part, target)
            .await
            .with_context(|| format!("renaming {} to {}", part.display(), target.display()))?;
        Ok(n)
    }
    .await;
    bar.finish_and_clear();
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}
