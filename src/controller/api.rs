//! REST API under `/api/v1/` (DESIGN §5a). Each route becomes a [`ControlRequest`]; the request
//! checks its own permission and does the work, so this file only maps HTTP onto requests.

use super::Controller;
use super::auth;
use super::error::ApiError;
use super::requests::ControlRequest;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use warp::http::{Method, StatusCode};

/// A matched route: its pattern (the metrics label), the request it makes and the values the
/// path supplies.
struct Route {
    pattern: &'static str,
    request: &'static str,
    params: Vec<(&'static str, Value)>,
    /// Whether the request body is used.
    body: bool,
    /// Answered without a token.
    public: bool,
}

fn route(method: &Method, segments: &[&str]) -> Option<Route> {
    let r = |pattern, request, params: Vec<(&'static str, Value)>, body| Route {
        pattern,
        request,
        params,
        body,
        public: false,
    };
    let s = |v: &str| Value::String(v.to_string());
    let id_or_name = |v: &str| match v.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(v.to_string()),
    };
    let m = method.as_str();
    Some(match (m, segments) {
        ("GET", ["status"]) => Route {
            public: true,
            ..r("/status", "status", vec![], false)
        },
        ("GET", ["player_auth", "servers"]) => Route {
            public: true,
            ..r("/player_auth/servers", "player_auth.servers", vec![], false)
        },
        ("POST", ["player_auth", action @ ("start" | "player_code" | "poll")]) => {
            let (pattern, request) = match *action {
                "start" => ("/player_auth/start", "player_auth.start"),
                "player_code" => ("/player_auth/player_code", "player_auth.player_code"),
                _ => ("/player_auth/poll", "player_auth.poll"),
            };
            Route {
                public: true,
                ..r(pattern, request, vec![], true)
            }
        }
        ("GET", ["me"]) => r("/me", "me", vec![], false),
        ("GET", ["permissions"]) => r("/permissions", "permission_list", vec![], false),
        ("GET", ["plugins"]) => r("/plugins", "plugin_list", vec![], false),
        ("GET", ["external-plugins"]) => {
            r("/external-plugins", "external_plugin_list", vec![], false)
        }
        (
            "POST",
            [
                "external-plugins",
                p,
                action @ ("token" | "revoke" | "limit"),
            ],
        ) => {
            let (pattern, request, body) = match *action {
                "token" => (
                    "/external-plugins/{name}/token",
                    "external_plugin_token",
                    false,
                ),
                "revoke" => (
                    "/external-plugins/{name}/revoke",
                    "external_plugin_revoke",
                    false,
                ),
                _ => (
                    "/external-plugins/{name}/limit",
                    "external_plugin_limit",
                    true,
                ),
            };
            r(pattern, request, vec![("plugin", s(p))], body)
        }
        ("POST", ["external-plugins", p, "requests", q]) => r(
            "/external-plugins/{name}/requests/{request}",
            "external_plugin_call",
            vec![("plugin", s(p)), ("request", s(q))],
            true,
        ),
        ("GET", ["users"]) => r("/users", "user_list", vec![], false),
        ("POST", ["users"]) => r("/users", "user_create", vec![], true),
        ("GET", ["users", u]) => r("/users/{name}", "user_get", vec![("user", s(u))], false),
        ("PATCH", ["users", u]) => r("/users/{name}", "user_update", vec![("user", s(u))], true),
        ("DELETE", ["users", u]) => r("/users/{name}", "user_delete", vec![("user", s(u))], false),
        ("POST", ["users", u, "revoke-tokens"]) => r(
            "/users/{name}/revoke-tokens",
            "user_revoke_tokens",
            vec![("user", s(u))],
            false,
        ),
        ("GET", ["players"]) => r("/players", "player_list", vec![], false),
        ("GET", ["players", u]) => r("/players/{name}", "player_get", vec![("user", s(u))], false),
        (
            "POST",
            [
                "users",
                u,
                action @ ("kick" | "ban" | "unban" | "promote" | "demote" | "whitelist"
                | "unwhitelist"),
            ],
        ) => {
            let (pattern, request) = match *action {
                "kick" => ("/users/{name}/kick", "player_kick"),
                "ban" => ("/users/{name}/ban", "player_ban"),
                "unban" => ("/users/{name}/unban", "player_unban"),
                "promote" => ("/users/{name}/promote", "player_promote"),
                "demote" => ("/users/{name}/demote", "player_demote"),
                "whitelist" => ("/users/{name}/whitelist", "player_whitelist"),
                _ => ("/users/{name}/unwhitelist", "player_unwhitelist"),
            };
            r(pattern, request, vec![("user", s(u))], true)
        }
        ("POST", ["lists", "import"]) => r("/lists/import", "list_import", vec![], true),
        ("GET", ["lists", l]) => r("/lists/{list}", "list_export", vec![("list", s(l))], false),
        ("GET", ["tokens"]) => r("/tokens", "token_list", vec![], false),
        ("POST", ["tokens"]) => r("/tokens", "token_create", vec![], true),
        ("DELETE", ["tokens", id]) => r(
            "/tokens/{id}",
            "token_revoke",
            vec![("id", id_or_name(id))],
            false,
        ),
        ("GET", ["roles"]) => r("/roles", "role_list", vec![], false),
        ("POST", ["roles"]) => r("/roles", "role_create", vec![], true),
        ("PATCH", ["roles", id]) => r(
            "/roles/{id}",
            "role_update",
            vec![("id", id_or_name(id))],
            true,
        ),
        ("DELETE", ["roles", id]) => r(
            "/roles/{id}",
            "role_delete",
            vec![("id", id_or_name(id))],
            false,
        ),
        ("GET", ["config", "schema"]) => r("/config/schema", "config_schema", vec![], false),
        ("GET", ["controller", "config"]) => {
            r("/controller/config", "controller_config_get", vec![], false)
        }
        ("PATCH", ["controller", "config"]) => r(
            "/controller/config",
            "controller_config_update",
            vec![],
            true,
        ),
        ("GET", ["hosts", h, "config"]) => r(
            "/hosts/{id}/config",
            "host_config_get",
            vec![("host", id_or_name(h))],
            false,
        ),
        ("PATCH", ["hosts", h, "config"]) => r(
            "/hosts/{id}/config",
            "host_config_update",
            vec![("host", id_or_name(h))],
            true,
        ),
        ("POST", ["instances", i, "reveal"]) => r(
            "/instances/{id}/reveal",
            "instance_reveal_secret",
            vec![("instance", id_or_name(i))],
            true,
        ),
        ("GET", ["hosts"]) => r("/hosts", "host_list", vec![], false),
        ("GET", ["hosts", h]) => r(
            "/hosts/{id}",
            "host_get",
            vec![("host", id_or_name(h))],
            false,
        ),
        ("POST", ["hosts", h, "factorio-versions"]) => r(
            "/hosts/{id}/factorio-versions",
            "host_install_factorio",
            vec![("host", id_or_name(h))],
            true,
        ),
        ("DELETE", ["hosts", h, "factorio-versions", v]) => r(
            "/hosts/{id}/factorio-versions/{version}",
            "host_remove_factorio",
            vec![("host", id_or_name(h)), ("version", s(v))],
            false,
        ),
        ("POST", ["hosts", h, "revoke"]) => r(
            "/hosts/{id}/revoke",
            "host_revoke",
            vec![("host", id_or_name(h))],
            false,
        ),
        ("GET", ["join-token"]) => r("/join-token", "join_token_get", vec![], false),
        ("POST", ["join-token", "rotate"]) => {
            r("/join-token/rotate", "join_token_rotate", vec![], false)
        }
        ("GET", ["instances"]) => r("/instances", "instance_list", vec![], false),
        ("POST", ["instances"]) => r("/instances", "instance_create", vec![], true),
        ("GET", ["instances", i]) => r(
            "/instances/{id}",
            "instance_get",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("PATCH", ["instances", i]) => r(
            "/instances/{id}",
            "instance_update_config",
            vec![("instance", id_or_name(i))],
            true,
        ),
        ("DELETE", ["instances", i]) => r(
            "/instances/{id}",
            "instance_delete",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("POST", ["instances", i, "assign"]) => r(
            "/instances/{id}/assign",
            "instance_assign",
            vec![("instance", id_or_name(i))],
            true,
        ),
        ("GET", ["audit"]) => r("/audit", "audit_list", vec![], false),
        ("GET", ["history"]) => r("/history", "history", vec![], false),
        ("GET", ["research"]) => r("/research", "research_list", vec![], false),
        ("GET", ["storage"]) => r("/storage", "storage_list", vec![], false),
        ("POST", ["storage"]) => r("/storage", "storage_set", vec![], true),
        ("POST", ["storage", "resolve"]) => r("/storage/resolve", "storage_resolve", vec![], true),
        ("GET", ["mods"]) => r("/mods", "mod_list", vec![], false),
        ("GET", ["mod_portal", "search"]) => {
            r("/mod_portal/search", "mod_portal_search", vec![], false)
        }
        ("POST", ["mod_portal", "install"]) => {
            r("/mod_portal/install", "mod_portal_install", vec![], true)
        }
        ("GET", ["mod_packs"]) => r("/mod_packs", "mod_pack_list", vec![], false),
        ("POST", ["mod_packs"]) => r("/mod_packs", "mod_pack_create", vec![], true),
        ("GET", ["mod_packs", p]) => r(
            "/mod_packs/{name}",
            "mod_pack_get",
            vec![("pack", s(&super::files::decode(p)))],
            false,
        ),
        ("PATCH", ["mod_packs", p]) => r(
            "/mod_packs/{name}",
            "mod_pack_update",
            vec![("pack", s(&super::files::decode(p)))],
            true,
        ),
        ("DELETE", ["mod_packs", p]) => r(
            "/mod_packs/{name}",
            "mod_pack_delete",
            vec![("pack", s(&super::files::decode(p)))],
            false,
        ),
        ("GET", ["mod_portal", "updates"]) => {
            r("/mod_portal/updates", "mod_updates", vec![], false)
        }
        ("GET", ["inventories"]) => r("/inventories", "inventory_list", vec![], false),
        ("GET", ["inventories", p]) => r(
            "/inventories/{name}",
            "inventory_get",
            vec![("player", s(p))],
            false,
        ),
        ("PUT", ["inventories", p]) => r(
            "/inventories/{name}",
            "inventory_import",
            vec![("player", s(p))],
            true,
        ),
        ("POST", ["inventories", p, "release"]) => r(
            "/inventories/{name}/release",
            "inventory_release",
            vec![("player", s(p))],
            false,
        ),
        ("GET", ["global_chat", "messages"]) => {
            r("/global_chat/messages", "chat_history", vec![], false)
        }
        ("POST", ["global_chat", "send"]) => r("/global_chat/send", "chat_send", vec![], true),
        ("DELETE", ["mods", f]) => r("/mods/{file}", "mod_delete", vec![("file", s(f))], false),
        (
            "POST",
            [
                "instances",
                i,
                action @ ("start" | "stop" | "restart" | "kill" | "rcon"),
            ],
        ) => {
            let (pattern, request) = match *action {
                "start" => ("/instances/{id}/start", "instance_start"),
                "stop" => ("/instances/{id}/stop", "instance_stop"),
                "restart" => ("/instances/{id}/restart", "instance_restart"),
                "kill" => ("/instances/{id}/kill", "instance_kill"),
                _ => ("/instances/{id}/rcon", "instance_rcon"),
            };
            r(pattern, request, vec![("instance", id_or_name(i))], true)
        }
        ("GET", ["instances", i, "logs"]) => r(
            "/instances/{id}/logs",
            "instance_logs",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("GET", ["instances", i, "saves"]) => r(
            "/instances/{id}/saves",
            "save_list",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("GET", ["instances", i, "scenarios"]) => r(
            "/instances/{id}/scenarios",
            "scenario_list",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("POST", ["instances", i, "saves"]) => r(
            "/instances/{id}/saves",
            "save_create",
            vec![("instance", id_or_name(i))],
            true,
        ),
        ("GET", ["instances", i, "backups"]) => r(
            "/instances/{id}/backups",
            "backup_list",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("POST", ["instances", i, "backup"]) => r(
            "/instances/{id}/backup",
            "backup_create",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("DELETE", ["instances", i, "saves", n]) => r(
            "/instances/{id}/saves/{name}",
            "save_delete",
            vec![
                ("instance", id_or_name(i)),
                ("name", s(&super::files::decode(n))),
            ],
            false,
        ),
        (
            "POST",
            [
                "instances",
                i,
                "saves",
                n,
                action @ ("rename" | "copy" | "use" | "transfer"),
            ],
        ) => {
            let (pattern, request) = match *action {
                "rename" => ("/instances/{id}/saves/{name}/rename", "save_rename"),
                "copy" => ("/instances/{id}/saves/{name}/copy", "save_copy"),
                "use" => ("/instances/{id}/saves/{name}/use", "save_use"),
                _ => ("/instances/{id}/saves/{name}/transfer", "save_transfer"),
            };
            let body = *action != "use";
            r(
                pattern,
                request,
                vec![
                    ("instance", id_or_name(i)),
                    ("name", s(&super::files::decode(n))),
                ],
                body,
            )
        }
        ("POST", ["instances", i, "backups", f, "restore"]) => r(
            "/instances/{id}/backups/{file}/restore",
            "backup_restore",
            vec![
                ("instance", id_or_name(i)),
                ("file", s(&super::files::decode(f))),
            ],
            false,
        ),
        ("POST", ["instances", "bulk"]) => r("/instances/bulk", "instance_bulk", vec![], true),
        ("GET", ["instances", i, "schedule"]) => r(
            "/instances/{id}/schedule",
            "schedule_get",
            vec![("instance", id_or_name(i))],
            false,
        ),
        ("PUT", ["instances", i, "schedule"]) => r(
            "/instances/{id}/schedule",
            "schedule_set",
            vec![("instance", id_or_name(i))],
            true,
        ),
        ("DELETE", ["instances", i, "schedule"]) => r(
            "/instances/{id}/schedule",
            "schedule_delete",
            vec![("instance", id_or_name(i))],
            false,
        ),
        _ => return None,
    })
}

/// Query string → JSON fields (numbers where they parse). Values are plain names and numbers.
fn query_fields(query: &str) -> Vec<(String, Value)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            let v = v.replace('+', " ");
            let value = v
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or(Value::String(v));
            (k.to_string(), value)
        })
        .collect()
}

/// Reads a body of at most `limit` bytes.
pub async fn read_body<S, B>(mut body: S, limit: usize) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if out.len() + chunk.remaining() > limit {
            return Err(ApiError::new(
                413,
                "too_large",
                format!("request body exceeds the limit of {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            out.extend_from_slice(piece);
            let n = piece.len();
            chunk.advance(n);
        }
    }
    Ok(out)
}

fn parse_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Handles one API request end to end; returns the route label (for metrics) and the response.
pub async fn handle(
    ctl: Arc<Controller>,
    method: Method,
    tail: &str,
    query: &str,
    authorization: Option<String>,
    peer: Option<std::net::IpAddr>,
    body: impl Stream<Item = Result<impl Buf, warp::Error>> + Unpin,
) -> (&'static str, StatusCode, Value) {
    let segments: Vec<&str> = tail.split('/').filter(|s| !s.is_empty()).collect();
    let Some(route) = route(&method, &segments) else {
        // A known path asked with another method is a 405 naming the methods it takes.
        let allow: Vec<&str> = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .filter(|m| {
                Method::from_bytes(m.as_bytes()).is_ok_and(|m| route(&m, &segments).is_some())
            })
            .collect();
        if allow.is_empty() {
            let e = ApiError::not_found(format!("no route {method} /api/v1/{tail}"));
            return ("unknown", status(&e), e.to_json());
        }
        let allow = allow.join(", ");
        let e = ApiError::new(
            405,
            "method_not_allowed",
            format!("/api/v1/{tail} takes {allow}, not {method}"),
        );
        let mut body = e.to_json();
        body["error"]["allow"] = json!(allow);
        return ("unknown", status(&e), body);
    };
    if route.public && route.request == "status" {
        return (route.pattern, StatusCode::OK, json!(ctl.status()));
    }
    if route.public {
        // A plugin's routes for people not logged in (player_auth's login flow).
        let result = async {
            let data = if route.body {
                parse_body(&read_body(body, ctl.settings().max_body_bytes).await?)?
            } else {
                serde_json::Map::new()
            };
            ctl.plugin_public(peer, route.request, Value::Object(data))
                .await
        }
        .await;
        return match result {
            Ok(v) => (route.pattern, StatusCode::OK, v),
            Err(e) => (route.pattern, status(&e), e.to_json()),
        };
    }
    let result = async {
        let token = auth::bearer(authorization.as_deref())?;
        let actor = auth::authenticate(&ctl.store, token).await?;
        let mut data = if route.body {
            parse_body(&read_body(body, ctl.settings().max_body_bytes).await?)?
        } else {
            serde_json::Map::new()
        };
        for (k, v) in query_fields(query) {
            data.entry(k).or_insert(v);
        }
        for (k, v) in route.params {
            data.insert(k.to_string(), v);
        }
        let request = ControlRequest::from_link(route.request, Value::Object(data))?;
        request.execute(&ctl, &actor).await
    }
    .await;
    match result {
        Ok(reply) => (
            route.pattern,
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
            reply.body,
        ),
        Err(e) => (route.pattern, status(&e), e.to_json()),
    }
}

fn status(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
