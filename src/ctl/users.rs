//! `ctl user …` and `ctl role …`. The API names users by name and roles by id; ctl accepts
//! either for both and resolves the other form with one list call.

use super::client::{Client, seg};
use super::output::{Output, Style, Table, cell, time_ms};
use super::{RoleCommand, UserCommand};
use anyhow::Context;
use serde_json::{Value, json};

/// The name of a user given by name or id. Only a number needs a look-up; a user whose name is
/// that number wins over the user with that id.
async fn user_name(client: &Client, user: &str) -> anyhow::Result<String> {
    let Ok(id) = user.parse::<i64>() else {
        return Ok(user.to_string());
    };
    let users = client.get("/users").await.context("listing users")?;
    let users = users.as_array().cloned().unwrap_or_default();
    let by_name = users.iter().find(|u| u["name"] == json!(user));
    let by_id = users.iter().find(|u| u["id"] == json!(id));
    Ok(by_name
        .or(by_id)
        .and_then(|u| u["name"].as_str())
        .unwrap_or(user)
        .to_string())
}

async fn roles(client: &Client) -> anyhow::Result<Vec<Value>> {
    let roles = client.get("/roles").await.context("listing roles")?;
    Ok(roles.as_array().cloned().unwrap_or_default())
}

/// The role named `role` (by name first, then by id) in `roles`.
fn find_role<'a>(roles: &'a [Value], role: &str) -> anyhow::Result<&'a Value> {
    let by_name = roles.iter().find(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(role))
    });
    let by_id = || {
        role.parse::<i64>()
            .ok()
            .and_then(|id| roles.iter().find(|r| r["id"] == json!(id)))
    };
    by_name.or_else(by_id).ok_or_else(|| {
        let known: Vec<&str> = roles.iter().filter_map(|r| r["name"].as_str()).collect();
        anyhow::anyhow!("no role '{role}' (roles: {})", known.join(", "))
    })
}

fn role_ids(roles: &[Value], names: &[String]) -> anyhow::Result<Vec<i64>> {
    names
        .iter()
        .filter(|n| !n.is_empty())
        .map(|n| find_role(roles, n).map(|r| r["id"].as_i64().unwrap_or_default()))
        .collect()
}

fn flag(out: &Output, on: bool, style: Style, text: &str) -> String {
    if on {
        out.paint(style, text)
    } else {
        "-".into()
    }
}

fn user_line(out: &Output, u: &Value, role_names: &dyn Fn(&Value) -> String) -> Vec<String> {
    let banned = if u["is_banned"] == json!(true) {
        let reason = u["ban_reason"].as_str().filter(|r| !r.is_empty());
        out.paint(
            Style::Red,
            &match reason {
                Some(r) => format!("banned: {r}"),
                None => "banned".into(),
            },
        )
    } else {
        "-".into()
    };
    vec![
        cell(&u["id"]),
        cell(&u["name"]),
        role_names(&u["roles"]),
        flag(out, u["is_admin"] == json!(true), Style::Yellow, "admin"),
        flag(out, u["is_whitelisted"] == json!(true), Style::Green, "yes"),
        banned,
    ]
}

pub async fn user(client: &Client, out: &Output, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::List => {
            let (users, roles) = tokio::join!(client.get("/users"), roles(client));
            let users = users.context("listing users")?;
            // Role names are a nicety: without permission to list roles, show their ids.
            let roles = roles.unwrap_or_default();
            let role_names = |ids: &Value| {
                let names: Vec<String> = ids
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|id| {
                        roles
                            .iter()
                            .find(|r| &r["id"] == id)
                            .map_or_else(|| cell(id), |r| cell(&r["name"]))
                    })
                    .collect();
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(", ")
                }
            };
            out.print(&users, |users| {
                let mut t = Table::new(&["ID", "NAME", "ROLES", "ADMIN", "WHITELISTED", "BANNED"]);
                for u in users.as_array().into_iter().flatten() {
                    t.row(user_line(out, u, &role_names));
                }
                t.render(out, "No users.")
            })
        }
        UserCommand::Show { user } => {
            let name = user_name(client, &user).await?;
            let u = client
                .get(&format!("/users/{}", seg(&name)))
                .await
                .with_context(|| format!("getting user '{user}'"))?;
            let roles = roles(client).await.unwrap_or_default();
            out.print(&u, |u| {
                let role_names: Vec<String> = u["roles"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|id| {
                        roles
                            .iter()
                            .find(|r| &r["id"] == id)
                            .map_or_else(|| cell(id), |r| cell(&r["name"]))
                    })
                    .collect();
                let label = |s: &str| out.paint(Style::Bold, &format!("{s:<12}"));
                format!(
                    "{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n{} {}\n",
                    label("name"),
                    cell(&u["name"]),
                    label("id"),
                    cell(&u["id"]),
                    label("roles"),
                    if role_names.is_empty() {
                        "-".into()
                    } else {
                        role_names.join(", ")
                    },
                    label("admin"),
                    u["is_admin"] == json!(true),
                    label("whitelisted"),
                    u["is_whitelisted"] == json!(true),
                    label("banned"),
                    match (u["is_banned"] == json!(true), u["ban_reason"].as_str()) {
                        (true, Some(r)) if !r.is_empty() => format!("true ({r})"),
                        (b, _) => b.to_string(),
                    },
                    label("created"),
                    time_ms(&u["created_at"]),
                )
            })
        }
        UserCommand::Create {
            name,
            roles: role_args,
            admin,
            whitelisted,
        } => {
            let mut body = json!({ "name": name });
            if !role_args.is_empty() {
                let roles = roles(client).await?;
                body["roles"] = json!(role_ids(&roles, &role_args)?);
            }
            if admin {
                body["is_admin"] = json!(true);
            }
            if whitelisted {
                body["is_whitelisted"] = json!(true);
            }
            let u = client
                .post("/users", &body)
                .await
                .with_context(|| format!("creating user '{name}'"))?;
            out.print(&u, |u| {
                format!("Created user {} (id {})", cell(&u["name"]), cell(&u["id"]))
            })
        }
        UserCommand::Delete { user } => {
            let name = user_name(client, &user).await?;
            let reply = client
                .delete(&format!("/users/{}", seg(&name)))
                .await
                .with_context(|| format!("deleting user '{user}'"))?;
            out.print(&reply, |_| format!("Deleted user {name}"))
        }
        UserCommand::SetRoles { user, roles: names } => {
            let roles = roles(client).await?;
            let ids = role_ids(&roles, &names)?;
            update(
                client,
                out,
                &user,
                json!({ "roles": ids }),
                "setting the roles of",
                |u| {
                    let names: Vec<String> = u["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|id| {
                            roles
                                .iter()
                                .find(|r| &r["id"] == id)
                                .map_or_else(|| cell(id), |r| cell(&r["name"]))
                        })
                        .collect();
                    if names.is_empty() {
                        format!("User {} has no roles", cell(&u["name"]))
                    } else {
                        format!("User {} has roles {}", cell(&u["name"]), names.join(", "))
                    }
                },
            )
            .await
        }
        UserCommand::Admin { user, revoke } => {
            let (action, says) = if revoke {
                ("demote", "is no longer an admin")
            } else {
                ("promote", "is an admin")
            };
            act(client, out, &user, action, json!({}), says).await
        }
        UserCommand::Demote { user } => {
            act(
                client,
                out,
                &user,
                "demote",
                json!({}),
                "is no longer an admin",
            )
            .await
        }
        UserCommand::Whitelist { user, remove } => {
            let (action, says) = if remove {
                ("unwhitelist", "is off the whitelist")
            } else {
                ("whitelist", "is whitelisted")
            };
            act(client, out, &user, action, json!({}), says).await
        }
        UserCommand::Ban { user, reason } => {
            let body = json!({ "reason": reason.unwrap_or_default() });
            act(
                client,
                out,
                &user,
                "ban",
                body,
                "is banned on every instance",
            )
            .await
        }
        UserCommand::Unban { user } => {
            act(
                client,
                out,
                &user,
                "unban",
                json!({}),
                "is no longer banned",
            )
            .await
        }
        UserCommand::Kick { user, reason } => {
            let name = user_name(client, &user).await?;
            let body = json!({ "reason": reason.unwrap_or_default() });
            let r = client
                .post(&format!("/users/{}/kick", seg(&name)), &body)
                .await
                .with_context(|| format!("kicking '{user}'"))?;
            out.print(&r, |r| {
                let from: Vec<String> = r["kicked_from"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect();
                format!("Kicked {} from {}", cell(&r["name"]), from.join(", "))
            })
        }
        UserCommand::Players { search } => {
            let path = match search {
                Some(s) => format!("/players?search={}", seg(&s)),
                None => "/players".into(),
            };
            let players = client.get(&path).await.context("listing players")?;
            out.print(&players, |players| {
                let mut t = Table::new(&[
                    "NAME",
                    "ONLINE ON",
                    "JOINS",
                    "ONLINE TIME",
                    "LAST SEEN (UTC)",
                    "FLAGS",
                ]);
                for p in players.as_array().into_iter().flatten() {
                    t.row(player_row(out, p));
                }
                t.render(out, "No players.")
            })
        }
        UserCommand::History { user } => {
            let name = user_name(client, &user).await?;
            let p = client
                .get(&format!("/players/{}", seg(&name)))
                .await
                .with_context(|| format!("getting player '{user}'"))?;
            out.print(&p, |p| history_text(out, p))
        }
        UserCommand::Import {
            admins,
            bans,
            whitelist,
            dry_run,
            replace,
        } => {
            let mut body = json!({ "dry_run": dry_run, "replace": replace });
            let mut any = false;
            for (key, path) in [("admins", admins), ("bans", bans), ("whitelist", whitelist)] {
                if let Some(path) = path {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    body[key] = json!(text);
                    any = true;
                }
            }
            anyhow::ensure!(
                any,
                "nothing to import: give --admins FILE, --bans FILE and/or --whitelist FILE"
            );
            let r = client
                .post("/lists/import", &body)
                .await
                .context("importing the lists")?;
            out.print(&r, import_text)
        }
        UserCommand::Export {
            admins,
            bans,
            whitelist,
        } => {
            let mut wrote = Vec::new();
            let mut any = false;
            for (key, path) in [("admins", admins), ("bans", bans), ("whitelist", whitelist)] {
                let Some(path) = path else { continue };
                any = true;
                let list = client
                    .get(&format!("/lists/{key}"))
                    .await
                    .with_context(|| format!("exporting the {key} list"))?;
                let text = serde_json::to_string_pretty(&list)? + "\n";
                if path.as_os_str() == "-" {
                    super::output::write_stdout(&text)?;
                } else {
                    crate::saves::write_atomic(&path, text.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    let n = list.as_array().map_or(0, Vec::len);
                    wrote.push(format!("{} ({n} entries)", path.display()));
                }
            }
            anyhow::ensure!(
                any,
                "nothing to export: give --admins FILE, --bans FILE and/or --whitelist FILE"
            );
            if !wrote.is_empty() {
                eprintln!("Wrote {}", wrote.join(", "));
            }
            Ok(())
        }
        UserCommand::Token {
            user,
            list,
            revoke,
            revoke_all,
        } => token(client, out, &user, list, revoke, revoke_all).await,
    }
}

/// One player action (`POST /users/{name}/<action>`); a name never seen is created by the
/// actions that give a flag.
async fn act(
    client: &Client,
    out: &Output,
    user: &str,
    action: &str,
    body: Value,
    says: &str,
) -> anyhow::Result<()> {
    let name = user_name(client, user).await?;
    let u = client
        .post(&format!("/users/{}/{action}", seg(&name)), &body)
        .await
        .with_context(|| format!("{action} '{user}'"))?;
    out.print(&u, |u| {
        let already = if u["changed"] == json!(false) {
            " (no change)"
        } else {
            ""
        };
        format!("User {} {says}{already}", cell(&u["name"]))
    })
}

fn duration_ms(v: &Value) -> String {
    super::output::duration_s(v.as_i64().unwrap_or(0).max(0) as u64 / 1000)
}

fn player_row(out: &Output, p: &Value) -> Vec<String> {
    let on: Vec<String> = p["online_on"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    let mut flags = Vec::new();
    if p["is_admin"] == json!(true) {
        flags.push(out.paint(Style::Yellow, "admin"));
    }
    if p["is_whitelisted"] == json!(true) {
        flags.push(out.paint(Style::Green, "whitelisted"));
    }
    if p["is_banned"] == json!(true) {
        flags.push(out.paint(Style::Red, "banned"));
    }
    vec![
        cell(&p["name"]),
        if on.is_empty() {
            "-".into()
        } else {
            out.paint(Style::Green, &on.join(", "))
        },
        cell(&p["join_count"]),
        duration_ms(&p["online_time_ms"]),
        time_ms(&p["last_seen_at"]),
        if flags.is_empty() {
            "-".into()
        } else {
            flags.join(" ")
        },
    ]
}

fn history_text(out: &Output, p: &Value) -> String {
    let mut s = format!(
        "{} — {} join(s), online {}{}\n\n",
        cell(&p["name"]),
        cell(&p["join_count"]),
        duration_ms(&p["online_time_ms"]),
        match p["online_on"].as_array() {
            Some(a) if !a.is_empty() => format!(
                ", now on {}",
                a.iter().map(cell).collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        }
    );
    let mut t = Table::new(&[
        "INSTANCE",
        "JOINS",
        "ONLINE TIME",
        "FIRST (UTC)",
        "LAST (UTC)",
    ]);
    for st in p["instance_stats"].as_array().into_iter().flatten() {
        t.row(vec![
            cell(&st["instance"]),
            cell(&st["join_count"]),
            duration_ms(&st["online_time_ms"]),
            time_ms(&st["first_join_at"]),
            time_ms(&st["last_join_at"]),
        ]);
    }
    s += &t.render(out, "Never joined a game.");
    let mut h = Table::new(&["INSTANCE", "JOINED (UTC)", "LEFT (UTC)", "FOR", "HOW"]);
    for se in p["history"].as_array().into_iter().flatten() {
        h.row(vec![
            cell(&se["instance"]),
            time_ms(&se["joined_at"]),
            if se["left_at"].is_null() {
                out.paint(Style::Green, "online")
            } else {
                time_ms(&se["left_at"])
            },
            duration_ms(&se["duration_ms"]),
            cell(&se["leave_reason"]),
        ]);
    }
    if p["history"].as_array().is_some_and(|a| !a.is_empty()) {
        s += "\n";
        s += &h.render(out, "");
    }
    s
}

fn import_text(r: &Value) -> String {
    let names = |v: &Value| -> String {
        let n: Vec<String> = v.as_array().into_iter().flatten().map(cell).collect();
        if n.is_empty() {
            "-".into()
        } else {
            n.join(", ")
        }
    };
    let mut s = if r["dry_run"] == json!(true) {
        "Dry run: nothing was changed. An import would:\n".to_string()
    } else {
        "Imported:\n".to_string()
    };
    s += &format!("  create users   {}\n", names(&r["created"]));
    for key in ["admins", "bans", "whitelist"] {
        let c = &r[key];
        if c["given"] != json!(true) {
            continue;
        }
        s += &format!(
            "  {key:<14} add {}; {}unchanged {}{}\n",
            names(&c["added"]),
            if c["updated"].as_array().is_some_and(|a| !a.is_empty()) {
                format!("new reason {}; ", names(&c["updated"]))
            } else {
                String::new()
            },
            cell(&c["unchanged"]),
            if c["removed"].as_array().is_some_and(|a| !a.is_empty()) {
                format!("; remove {}", names(&c["removed"]))
            } else {
                String::new()
            },
        );
    }
    s
}

async fn update(
    client: &Client,
    out: &Output,
    user: &str,
    body: Value,
    doing: &str,
    human: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    let name = user_name(client, user).await?;
    let u = client
        .patch(&format!("/users/{}", seg(&name)), &body)
        .await
        .with_context(|| format!("{doing} user '{user}'"))?;
    out.print(&u, human)
}

async fn token(
    client: &Client,
    out: &Output,
    user: &str,
    list: bool,
    revoke: Option<i64>,
    revoke_all: bool,
) -> anyhow::Result<()> {
    let name = user_name(client, user).await?;
    if list {
        let tokens = client
            .get(&format!("/tokens?user={}", seg(&name)))
            .await
            .with_context(|| format!("listing the tokens of user '{user}'"))?;
        return out.print(&tokens, |tokens| {
            let mut t = Table::new(&["ID", "USER", "CREATED (UTC)", "REVOKED (UTC)"]);
            for tk in tokens.as_array().into_iter().flatten() {
                t.row(vec![
                    cell(&tk["id"]),
                    cell(&tk["user"]),
                    time_ms(&tk["created_at"]),
                    time_ms(&tk["revoked_at"]),
                ]);
            }
            t.render(out, "No tokens.")
        });
    }
    if let Some(id) = revoke {
        let reply = client
            .delete(&format!("/tokens/{id}"))
            .await
            .with_context(|| format!("revoking token {id}"))?;
        return out.print(&reply, |_| format!("Revoked token {id}"));
    }
    if revoke_all {
        let reply = client
            .post(&format!("/users/{}/revoke-tokens", seg(&name)), &json!({}))
            .await
            .with_context(|| format!("revoking the tokens of user '{user}'"))?;
        return out.print(&reply, |r| {
            format!("Revoked {} token(s) of {name}", cell(&r["revoked"]))
        });
    }
    let reply = client
        .post("/tokens", &json!({ "user": name }))
        .await
        .with_context(|| format!("issuing a token for user '{user}'"))?;
    // The token alone on stdout, so `TOKEN=$(clustorio ctl user token alice)` works.
    out.print(&reply, |r| cell(&r["token"]))
}

pub async fn role(client: &Client, out: &Output, cmd: RoleCommand) -> anyhow::Result<()> {
    match cmd {
        RoleCommand::List => {
            let roles = client.get("/roles").await.context("listing roles")?;
            out.print(&roles, |roles| {
                let mut t = Table::new(&["ID", "NAME", "PERMISSIONS", "DESCRIPTION"]);
                for r in roles.as_array().into_iter().flatten() {
                    let perms = r["permissions"].as_array().map_or(0, Vec::len);
                    t.row(vec![
                        cell(&r["id"]),
                        cell(&r["name"]),
                        perms.to_string(),
                        cell(&r["description"]),
                    ]);
                }
                t.render(out, "No roles.")
            })
        }
        RoleCommand::Create {
            name,
            description,
            permissions,
        } => {
            let mut body = json!({ "name": name, "permissions": permissions });
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            let r = client
                .post("/roles", &body)
                .await
                .with_context(|| format!("creating role '{name}'"))?;
            out.print(&r, |r| {
                format!(
                    "Created role {} (id {}) with {} permission(s)",
                    cell(&r["name"]),
                    cell(&r["id"]),
                    r["permissions"].as_array().map_or(0, Vec::len)
                )
            })
        }
        RoleCommand::Edit {
            role,
            name,
            description,
            set,
            add,
            remove,
        } => {
            let roles = roles(client).await?;
            let current = find_role(&roles, &role)?;
            let id = current["id"].as_i64().unwrap_or_default();
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if set.is_some() || !add.is_empty() || !remove.is_empty() {
                let mut perms: Vec<String> = match set {
                    Some(s) => s.into_iter().filter(|p| !p.is_empty()).collect(),
                    None => current["permissions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p.as_str().map(str::to_string))
                        .collect(),
                };
                for p in add {
                    if !perms.contains(&p) {
                        perms.push(p);
                    }
                }
                perms.retain(|p| !remove.contains(p));
                body["permissions"] = json!(perms);
            }
            anyhow::ensure!(
                body.as_object().is_some_and(|b| !b.is_empty()),
                "nothing to change: give --name, --description, --set, --add or --remove"
            );
            let r = client
                .patch(&format!("/roles/{id}"), &body)
                .await
                .with_context(|| format!("editing role '{role}'"))?;
            out.print(&r, |r| {
                format!(
                    "Role {} (id {}) has {} permission(s)",
                    cell(&r["name"]),
                    cell(&r["id"]),
                    r["permissions"].as_array().map_or(0, Vec::len)
                )
            })
        }
        RoleCommand::Delete { role } => {
            let roles = roles(client).await?;
            let id = find_role(&roles, &role)?["id"].as_i64().unwrap_or_default();
            let reply = client
                .delete(&format!("/roles/{id}"))
                .await
                .with_context(|| format!("deleting role '{role}'"))?;
            out.print(&reply, |_| format!("Deleted role {role}"))
        }
    }
}
