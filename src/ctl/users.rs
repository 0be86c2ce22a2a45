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
            update(
                client,
                out,
                &user,
                json!({ "is_admin": !revoke }),
                "changing admin of",
                |u| {
                    if revoke {
                        format!("User {} is no longer an admin", cell(&u["name"]))
                    } else {
                        format!("User {} is an admin", cell(&u["name"]))
                    }
                },
            )
            .await
        }
        UserCommand::Whitelist { user, remove } => {
            let body = json!({ "is_whitelisted": !remove });
            update(
                client,
                out,
                &user,
                body,
                "changing the whitelist for",
                |u| {
                    if remove {
                        format!("User {} is off the whitelist", cell(&u["name"]))
                    } else {
                        format!("User {} is whitelisted", cell(&u["name"]))
                    }
                },
            )
            .await
        }
        UserCommand::Ban { user, reason } => {
            let body = json!({ "is_banned": true, "ban_reason": reason.unwrap_or_default() });
            update(client, out, &user, body, "banning", |u| {
                format!("User {} is banned", cell(&u["name"]))
            })
            .await
        }
        UserCommand::Unban { user } => {
            update(
                client,
                out,
                &user,
                json!({ "is_banned": false }),
                "unbanning",
                |u| format!("User {} is no longer banned", cell(&u["name"])),
            )
            .await
        }
        UserCommand::Token {
            user,
            list,
            revoke,
            revoke_all,
        } => token(client, out, &user, list, revoke, revoke_all).await,
    }
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
