//! A host's defaults for its games (the egg's variables for a slave: server name template, game
//! password, maximum players, visibility, factorio.com login). They sit between the settings
//! schema's defaults and each instance's own config: schema < host < instance.

use crate::config::HostConfig;
use serde_json::{Map, Value, json};

/// The part of an instance config the host's settings supply (only what the host sets).
pub fn instance_defaults(cfg: &HostConfig) -> Value {
    let mut s = Map::new();
    if !cfg.game_password.is_empty() {
        s.insert("game_password".into(), json!(cfg.game_password));
    }
    if cfg.game_max_players > 0 {
        s.insert("max_players".into(), json!(cfg.game_max_players));
    }
    let (public, lan) = match cfg.game_visibility.as_str() {
        "public" => (true, false),
        "both" => (true, true),
        "hidden" => (false, false),
        _ => (false, true),
    };
    s.insert("visibility".into(), json!({ "public": public, "lan": lan }));
    if !cfg.factorio_username.is_empty() {
        s.insert("username".into(), json!(cfg.factorio_username));
    }
    if !cfg.factorio_token.is_empty() {
        s.insert("token".into(), json!(cfg.factorio_token));
    }
    json!({ "server_settings": s })
}

/// `stored` over `defaults`, objects merged key by key; a stored `null` keeps the default.
pub fn layered(defaults: &Value, stored: &Value) -> Value {
    match (defaults, stored) {
        (Value::Object(d), Value::Object(s)) => {
            let mut out = d.clone();
            for (k, v) in s {
                if v.is_null() {
                    continue;
                }
                let merged = match out.get(k) {
                    Some(base) => layered(base, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, Value::Null) => defaults.clone(),
        (_, s) => s.clone(),
    }
}

/// The server browser name of a game whose config names none.
pub fn server_name(template: &str, cluster: &str, instance: &str, host: &str) -> String {
    let template = if template.trim().is_empty() {
        "{cluster} - {instance}"
    } else {
        template
    };
    template
        .replace("{cluster}", cluster)
        .replace("{instance}", instance)
        .replace("{host}", host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_config_wins_over_the_host_and_the_host_over_the_schema() {
        let d = json!({"server_settings": {"game_password": "host", "max_players": 8, "visibility": {"public": true, "lan": false}}});
        let stored = json!({"server_settings": {"game_password": "mine", "visibility": {"lan": true}}, "auto_start": true});
        let v = layered(&d, &stored);
        assert_eq!(v["server_settings"]["game_password"], "mine");
        assert_eq!(v["server_settings"]["max_players"], 8);
        assert_eq!(
            v["server_settings"]["visibility"],
            json!({"public": true, "lan": true})
        );
        assert_eq!(v["auto_start"], true);
    }

    #[test]
    fn names_follow_the_template() {
        assert_eq!(server_name("", "C", "east", "h1"), "C - east");
        assert_eq!(
            server_name("{host}/{instance} @ {cluster}", "C", "east", "h1"),
            "h1/east @ C"
        );
    }
}
