//! The permission table: every permission once, with the text the web UI and docs show
//! (Clusterio's set, `research/clusterio.md` §4.2). Routes and link requests name one of these.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Permission {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// Part of the default "Player" role.
    pub grant_by_default: bool,
}

/// Grants every permission.
pub const ADMIN: &str = "core.admin";

macro_rules! permissions {
    ($( $name:literal, $default:literal, $title:literal, $desc:literal; )*) => {
        pub const ALL: &[Permission] = &[
            $( Permission { name: $name, title: $title, description: $desc, grant_by_default: $default }, )*
        ];
    };
}

permissions! {
    "core.admin", false, "Administrator", "Bypass all permission checks.";
    "core.control.connect", true, "Connect", "Connect to the controller's link socket (web UI, ctl).";
    "core.controller.get_config", false, "Read controller config", "Read the controller's configuration.";
    "core.controller.update_config", false, "Modify controller config", "Change the controller's configuration.";
    "core.host.get_config", false, "Read host config", "Read a host's configuration.";
    "core.host.update_config", false, "Modify host config", "Change a host's configuration.";
    "core.host.list", true, "List hosts", "See the hosts of the cluster.";
    "core.host.subscribe", true, "Subscribe to hosts", "Receive live host updates.";
    "core.host.generate_token", false, "Generate host token", "See and rotate the join token that lets new hosts register.";
    "core.host.revoke_token", false, "Revoke host token", "Revoke a host's token, disconnecting it.";
    "core.host.install_factorio", false, "Install Factorio", "Download and install a Factorio version on a host.";
    "core.host.remove_factorio", false, "Remove Factorio", "Delete an installed Factorio version from a host (not one a game runs or an instance asks for).";
    "core.instance.get", true, "Read instance", "See an instance's details.";
    "core.instance.list", true, "List instances", "See the instances of the cluster.";
    "core.instance.subscribe", true, "Subscribe to instances", "Receive live instance updates.";
    "core.instance.create", false, "Create instance", "Create new instances.";
    "core.instance.get_config", false, "Read instance config", "Read an instance's configuration.";
    "core.instance.update_config", false, "Modify instance config", "Change an instance's configuration.";
    "core.instance.reveal_secret", false, "Reveal instance secrets", "See the value of an instance's secret setting (game password, factorio.com token) on request; each reveal is audited.";
    "core.instance.assign", false, "Assign instance", "Assign an instance to a host.";
    "core.instance.save.list", false, "List saves", "See an instance's saves.";
    "core.instance.save.subscribe", false, "Subscribe to saves", "Receive live progress of save transfers and backup restores.";
    "core.instance.save.create", false, "Create save", "Create a new save for an instance.";
    "core.instance.save.rename", false, "Rename save", "Rename a save.";
    "core.instance.save.copy", false, "Copy save", "Copy a save.";
    "core.instance.save.delete", false, "Delete save", "Delete a save.";
    "core.instance.save.upload", false, "Upload save", "Upload a save to an instance.";
    "core.instance.scenario.upload", false, "Upload scenario", "Upload a scenario zip to an instance, for its new games.";
    "core.instance.save.transfer", false, "Transfer save", "Move a save between instances.";
    "core.instance.save.download", false, "Download save", "Download a save, or one of the controller's backups.";
    "core.instance.save.use", false, "Choose save to load", "Choose which save an instance loads at its next start.";
    "core.instance.backup.restore", false, "Restore backup", "Put one of the controller's backups back as an instance's save (stopping it first if it runs).";
    "core.instance.schedule.get", false, "Read restart schedule", "See an instance's restart schedule.";
    "core.instance.schedule.update", false, "Set restart schedule", "Set or remove an instance's restart schedule.";
    "core.instance.start", false, "Start instance", "Start an instance.";
    "core.instance.restart", false, "Restart instance", "Restart an instance.";
    "core.instance.stop", false, "Stop instance", "Stop an instance.";
    "core.instance.kill", false, "Kill instance", "Kill an instance without saving.";
    "core.instance.delete", false, "Delete instance", "Delete an instance and its files.";
    "core.instance.send_rcon", false, "Send RCON", "Send console commands to an instance.";
    "core.mod_pack.get", true, "Read mod pack", "See a mod pack.";
    "core.mod_pack.list", true, "List mod packs", "See the mod packs.";
    "core.mod_pack.create", false, "Create mod pack", "Create mod packs.";
    "core.mod_pack.update", false, "Update mod pack", "Change mod packs.";
    "core.mod_pack.delete", false, "Delete mod pack", "Delete mod packs.";
    "core.mod.list", true, "List mods", "See the mods stored on the controller.";
    "core.mod.search_portal", true, "Search mod portal", "Search the Factorio mod portal.";
    "core.mod.subscribe", true, "Subscribe to mods", "Receive live mod updates.";
    "core.mod.upload", false, "Upload mod", "Upload mods to the controller.";
    "core.mod.download", true, "Download mod", "Download mods from the controller.";
    "core.mod.delete", false, "Delete mod", "Delete mods from the controller.";
    "core.mod.download_from_portal", true, "Download from portal", "Fetch mods from the Factorio mod portal.";
    "core.permission.list", true, "List permissions", "See the permission list.";
    "core.role.list", true, "List roles", "See the roles.";
    "core.role.subscribe", true, "Subscribe to roles", "Receive live role updates.";
    "core.role.create", false, "Create role", "Create roles.";
    "core.role.update", false, "Update role", "Change roles and their permissions.";
    "core.role.delete", false, "Delete role", "Delete roles.";
    "core.user.get", true, "Read user", "See a user's details.";
    "core.user.list", true, "List users", "See the users.";
    "core.user.subscribe", true, "Subscribe to users", "Receive live user updates.";
    "core.user.create", false, "Create user", "Create users.";
    "core.user.revoke_token", true, "Revoke own token", "Revoke your own tokens.";
    "core.user.revoke_other_token", false, "Revoke other tokens", "Revoke and issue tokens of other users.";
    "core.user.update_roles", false, "Update user roles", "Change which roles a user has.";
    "core.user.set_admin", false, "Set admin", "Promote or demote in-game admins.";
    "core.user.set_banned", false, "Set banned", "Ban or unban players.";
    "core.user.set_whitelisted", false, "Set whitelisted", "Add or remove players from the whitelist.";
    "core.user.delete", false, "Delete user", "Delete users.";
    "core.user.kick", false, "Kick player", "Kick a player from the games they are in.";
    "core.user.bulk_import", false, "Bulk import users", "Import admin, ban and white lists.";
    "core.user.bulk_export", false, "Bulk export users", "Export admin, ban and white lists.";
    "core.user.bulk_restore", false, "Bulk restore users", "Replace lists from an import.";
    "core.log.follow", false, "Follow log", "Follow cluster and instance logs live.";
    "core.log.query", false, "Query log", "Read cluster and instance logs and the audit log.";
    "core.plugin.list", false, "List plugins", "See the plugins.";
    "core.plugin.install", false, "Install plugins", "Install plugins.";
}

/// Permissions earlier versions listed for features that never existed; dropped from stored
/// roles at start.
pub const REMOVED: &[&str] = &[
    "core.controller.restart",
    "core.controller.stop",
    "core.controller.update",
    "core.debug.dump_ws",
    "core.external.get_factorio_versions",
    "core.external.get_latest_releases",
    "core.host.create_config",
    "core.host.restart",
    "core.host.stop",
    "core.host.update",
    "core.mod.get",
    "core.mod.search",
    "core.mod_pack.subscribe",
    "core.plugin.update",
    "core.system.subscribe",
];

/// The core permissions followed by those the built-in plugins add: the one table.
pub fn all() -> impl Iterator<Item = &'static Permission> {
    ALL.iter().chain(crate::plugins::permissions())
}

pub fn find(name: &str) -> Option<&'static Permission> {
    all().find(|p| p.name == name)
}

/// Permissions of the default "Player" role.
pub fn defaults() -> impl Iterator<Item = &'static str> {
    all().filter(|p| p.grant_by_default).map(|p| p.name)
}

/// Id and name of the two built-in roles, (re)ensured at every start.
pub const ROLE_ADMIN_ID: i64 = 0;
pub const ROLE_ADMIN_NAME: &str = "Cluster Admin";
pub const ROLE_PLAYER_ID: i64 = 1;
pub const ROLE_PLAYER_NAME: &str = "Player";
/// User-created roles get ids from here on (Clusterio keeps 2..4 free).
pub const FIRST_CUSTOM_ROLE_ID: i64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_admin_is_listed() {
        let mut names: Vec<_> = all().map(|p| p.name).collect();
        names.sort_unstable();
        let len = names.len();
        names.dedup();
        assert_eq!(len, names.len());
        assert!(find(ADMIN).is_some());
        assert!(defaults().any(|p| p == "core.instance.list"));
        assert!(!defaults().any(|p| p == ADMIN));
    }

    /// Every permission guards something that exists: a REST route, a link request, an event
    /// or a setting names it in the code (issue 19: none for features that are not there).
    #[test]
    fn every_permission_is_used_by_a_feature() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut text = String::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("permissions.rs")
                {
                    text.push_str(&std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let unused: Vec<&str> = ALL
            .iter()
            .map(|p| p.name)
            .filter(|n| *n != ADMIN && !text.contains(&format!("\"{n}\"")))
            .collect();
        assert!(unused.is_empty(), "permissions no code checks: {unused:?}");
    }
}
