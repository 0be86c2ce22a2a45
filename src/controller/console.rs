//! The console on stdin (DESIGN §1): what a panel's console box sends.

use super::Controller;
use crate::store;
use std::sync::Arc;

const HELP: &str = "commands: help | status | stop | token [rotate] (the join token for slaves' MASTER_TOKEN) | admin-token <user> (a new login token)";

/// Answers each console line; end of input just ends the console.
pub fn spawn(ctl: Arc<Controller>) {
    let Some(mut rx) = crate::shutdown::console_lines() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            println!("{}", command(&ctl, line.trim()).await);
        }
    });
}

async fn command(ctl: &Arc<Controller>, line: &str) -> String {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return HELP.to_string();
    };
    match (cmd.to_ascii_lowercase().as_str(), words.next()) {
        ("help", _) => HELP.to_string(),
        ("status", _) => {
            let s = ctl.status();
            let hosts = ctl
                .store
                .read(store::hosts::list)
                .await
                .map(|h| h.len())
                .unwrap_or(0);
            let instances = ctl
                .store
                .read(store::instances::list)
                .await
                .map(|i| i.len())
                .unwrap_or(0);
            format!(
                "cluster '{}', clustorio {}, up {} s, hosts {} connected / {hosts} registered, {instances} instances",
                s["cluster_name"].as_str().unwrap_or_default(),
                s["version"].as_str().unwrap_or_default(),
                s["uptime_s"],
                ctl.hub.connected_hosts().len(),
            )
        }
        ("stop", _) => {
            ctl.shutdown.trigger();
            "stopping".to_string()
        }
        ("token", None) => match ctl.store.write(store::tokens::ensure_join_token).await {
            Ok(t) => format!("join token (set it as MASTER_TOKEN on each slave): {t}"),
            Err(e) => format!("could not read the join token: {e}"),
        },
        ("token", Some("rotate")) => {
            match ctl
                .store
                .write(|c| store::tokens::rotate_join_token(c, "console"))
                .await
            {
                Ok(t) => format!("new join token (registered hosts keep working): {t}"),
                Err(e) => format!("could not rotate the join token: {e}"),
            }
        }
        ("admin-token", Some(user)) => {
            let user = user.to_string();
            match ctl
                .store
                .write(move |c| store::tokens::issue(c, "console", &user))
                .await
            {
                Ok((_, token)) => format!("login token: {token}"),
                Err(e) => format!("{e}"),
            }
        }
        ("admin-token", None) => "usage: admin-token <user>".to_string(),
        _ => format!("unknown command '{line}'; type 'help' for the list"),
    }
}
