//! Every operation a user can ask of the controller, declared once. The REST routes (`api.rs`)
//! and the link socket (`socket.rs`) both turn their input into a [`ControlRequest`]; its
//! permission is checked here, in one place, and then it runs: store commit first, then the
//! reply, events and messages to hosts.

use super::Controller;
use super::auth::Actor;
use super::error::ApiError;
use super::hub::Event;
use crate::store::{self, grants, users::UserChange};
use serde::Deserialize;
use serde_json::{Value, json};

/// An instance, host or user named by id or by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    Id(i64),
    Name(String),
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Id(id) => write!(f, "{id}"),
            Ref::Name(n) => f.write_str(n),
        }
    }
}

/// Fields of `user_create` and `user_update`; unset flags stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFields {
    #[serde(alias = "name")]
    pub user: String,
    pub roles: Option<Vec<i64>>,
    pub is_admin: Option<bool>,
    pub is_whitelisted: Option<bool>,
    pub is_banned: Option<bool>,
    pub ban_reason: Option<String>,
}

impl UserFields {
    fn change(&self) -> UserChange {
        UserChange {
            roles: self.roles.clone(),
            is_admin: self.is_admin,
            is_whitelisted: self.is_whitelisted,
            ban: self
                .is_banned
                .map(|b| (b, self.ban_reason.clone().unwrap_or_default())),
        }
    }

    /// The permissions this change needs, beyond listing users.
    fn permissions(&self) -> Vec<&'static str> {
        let mut p = Vec::new();
        if self.roles.is_some() {
            p.push("core.user.update_roles");
        }
        if self.is_admin.is_some() {
            p.push("core.user.set_admin");
        }
        if self.is_whitelisted.is_some() {
            p.push("core.user.set_whitelisted");
        }
        if self.is_banned.is_some() || self.ban_reason.is_some() {
            p.push("core.user.set_banned");
        }
        p
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFields {
    #[serde(default)]
    pub id: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreate {
    pub name: String,
    #[serde(default = "empty_object")]
    pub config: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfigChange {
    pub instance: Ref,
    pub config: Value,
}

/// Which secret to reveal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretReveal {
    pub instance: Ref,
    pub field: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceAssign {
    pub instance: Ref,
    #[serde(default)]
    pub host: Option<Ref>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "name", content = "data", rename_all = "snake_case")]
pub enum ControlRequest {
    Status,
    /// Who the token belongs to, and what it may do.
    Me,
    PermissionList,
    /// Every built-in plugin: enabled on the cluster, and on which hosts, in which version.
    PluginList,
    UserList,
    UserGet {
        user: String,
    },
    UserCreate(UserFields),
    UserUpdate(UserFields),
    UserDelete {
        user: String,
    },
    UserRevokeTokens {
        user: String,
    },
    TokenList {
        #[serde(default)]
        user: Option<String>,
    },
    TokenCreate {
        user: String,
    },
    TokenRevoke {
        id: i64,
    },
    RoleList,
    RoleCreate(RoleFields),
    RoleUpdate(RoleFields),
    RoleDelete {
        id: i64,
    },
    HostList,
    HostRevoke {
        host: Ref,
    },
    /// One host's view (its Factorio versions among it).
    HostGet {
        host: Ref,
    },
    /// Download and install a Factorio version on a host (`versions.rs`).
    HostInstallFactorio {
        host: Ref,
        version: String,
    },
    /// Remove an installed Factorio version from a host (`versions.rs`).
    HostRemoveFactorio {
        host: Ref,
        version: String,
    },
    JoinTokenGet,
    JoinTokenRotate,
    InstanceList,
    InstanceGet {
        instance: Ref,
    },
    InstanceCreate(InstanceCreate),
    InstanceUpdateConfig(InstanceConfigChange),
    /// One secret's value, on explicit request (audited).
    InstanceRevealSecret(SecretReveal),
    /// Every setting's declaration: instance, controller and host.
    ConfigSchema,
    /// The controller's settings (secrets masked), and which changes wait for a restart.
    ControllerConfigGet,
    /// Changes `config-master.json` (a JSON merge patch).
    ControllerConfigUpdate {
        config: Value,
    },
    /// A host's settings, as the host reports them (secrets masked).
    HostConfigGet {
        host: Ref,
    },
    /// Changes a host's `config-slave.json` (a JSON merge patch, checked by the host).
    HostConfigUpdate {
        host: Ref,
        config: Value,
    },
    InstanceDelete {
        instance: Ref,
    },
    InstanceAssign(InstanceAssign),
    AuditList {
        #[serde(default)]
        limit: Option<u32>,
    },
    InstanceStart {
        instance: Ref,
        #[serde(default)]
        save: Option<String>,
    },
    InstanceStop {
        instance: Ref,
    },
    InstanceRestart {
        instance: Ref,
    },
    InstanceKill {
        instance: Ref,
    },
    InstanceRcon {
        instance: Ref,
        command: String,
    },
    InstanceLogs {
        instance: Ref,
        #[serde(default)]
        lines: Option<u64>,
    },
    SaveList {
        instance: Ref,
    },
    /// Scenarios a new game of the instance can start from (on its host).
    ScenarioList {
        instance: Ref,
    },
    /// A save of the running game, or (stopped) a new map with these settings.
    SaveCreate {
        instance: Ref,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        seed: Value,
        #[serde(default)]
        map_gen_settings: Value,
        #[serde(default)]
        map_settings: Value,
        #[serde(default)]
        preset: Value,
        #[serde(default)]
        map_exchange_string: Value,
        #[serde(default)]
        scenario: Value,
    },
    BackupCreate {
        instance: Ref,
    },
    BackupList {
        instance: Ref,
    },
    ModList,
    ModDelete {
        file: String,
    },
    History,
    /// global_chat: the latest messages, oldest first.
    ChatHistory,
    /// global_chat: a message from the admin console to one instance or every one.
    ChatSend {
        text: String,
        #[serde(default)]
        instance: Option<Ref>,
    },
    /// research_sync: the cluster's technologies and progress.
    ResearchList,
    /// inventory_sync: every stored player (generation, size, holder) and database stats.
    InventoryList,
    /// inventory_sync: one player's row and stored inventory.
    InventoryGet {
        player: String,
    },
    /// inventory_sync: an admin's import of a player's inventory (a new generation).
    InventoryImport {
        player: String,
        data: Value,
    },
    /// inventory_sync: frees a player held by a stuck game.
    InventoryRelease {
        player: String,
    },
    /// subspace_storage: the pool and the items on their way to games.
    StorageList,
    /// subspace_storage: settles what a revoked host left pending (audited).
    StorageResolve {
        host: String,
        #[serde(default)]
        exports: Option<String>,
    },
    /// subspace_storage: an admin's correction of one count (audited).
    StorageSet {
        name: String,
        count: i64,
        #[serde(default)]
        quality: Option<String>,
    },
    SaveDelete {
        instance: Ref,
        name: String,
    },
    SaveRename {
        instance: Ref,
        name: String,
        to: String,
    },
    SaveCopy {
        instance: Ref,
        name: String,
        to: String,
    },
    /// Which save the next start loads.
    SaveUse {
        instance: Ref,
        name: String,
    },
    /// A save to another instance (any host); moved unless `copy`.
    SaveTransfer {
        instance: Ref,
        name: String,
        to_instance: Ref,
        #[serde(default)]
        as_name: Option<String>,
        #[serde(default)]
        copy: bool,
    },
    BackupRestore {
        instance: Ref,
        file: String,
    },
    /// Start, stop or restart every instance of a host, or of the cluster.
    InstanceBulk {
        action: super::schedule::BulkAction,
        #[serde(default)]
        host: Option<Ref>,
    },
    ScheduleGet {
        instance: Ref,
    },
    ScheduleSet {
        instance: Ref,
        #[serde(flatten)]
        fields: super::schedule::ScheduleFields,
    },
    ScheduleDelete {
        instance: Ref,
    },
    /// Players: list, history, actions, list files (`players.rs`).
    #[serde(skip)]
    Players(super::players::PlayerRequest),
    /// External plugins: list, token, revoke, limit, call (`plugins::external::control`).
    #[serde(skip)]
    ExternalPlugin(crate::plugins::external::control::Request),
    /// The mod portal: search, install with dependencies, update checks (`portal.rs`).
    #[serde(skip)]
    Portal(super::portal::PortalRequest),
    /// Mod packs: list, get, create, update, delete (`mod_packs.rs`).
    #[serde(skip)]
    Packs(super::mod_packs::PackRequest),
}

fn grantor(actor: &Actor) -> grants::Grantor {
    grants::Grantor {
        name: actor.name.clone(),
        permissions: actor.permissions.clone(),
    }
}

fn empty_object() -> Value {
    json!({})
}

/// A successful result: HTTP status (200 or 201) and body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn ok(body: impl serde::Serialize) -> Result<Reply, ApiError> {
    Ok(Reply {
        status: 200,
        body: serde_json::to_value(body)
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))?,
    })
}

fn created(body: impl serde::Serialize) -> Result<Reply, ApiError> {
    ok(body).map(|r| Reply { status: 201, ..r })
}

impl ControlRequest {
    /// Decodes a link request (`name` + `data`).
    pub fn from_link(name: &str, data: Value) -> Result<Self, ApiError> {
        if let Some(r) = super::players::PlayerRequest::from_link(name, &data) {
            return r.map(ControlRequest::Players);
        }
        if let Some(r) = crate::plugins::external::control::Request::from_link(name, &data) {
            return r.map(ControlRequest::ExternalPlugin);
        }
        if let Some(r) = super::portal::PortalRequest::from_link(name, &data) {
            return r.map(ControlRequest::Portal);
        }
        if let Some(r) = super::mod_packs::PackRequest::from_link(name, &data) {
            return r.map(ControlRequest::Packs);
        }
        let empty = data.is_null() || data.as_object().is_some_and(|m| m.is_empty());
        // Requests without fields (e.g. "status") are unit variants: they take no "data".
        if empty && let Ok(r) = serde_json::from_value(json!({ "name": name })) {
            return Ok(r);
        }
        let data = if data.is_null() { json!({}) } else { data };
        serde_json::from_value(json!({ "name": name, "data": data })).map_err(|e| {
            if e.to_string().starts_with("unknown variant") {
                ApiError::new(
                    400,
                    "unknown_request",
                    format!("unknown request \"{name}\""),
                )
            } else {
                ApiError::bad_request(format!("invalid \"{name}\" request: {e}"))
            }
        })
    }

    /// The permissions this request needs from `actor`, all of them.
    fn permissions(&self, actor: &Actor) -> Vec<&'static str> {
        use ControlRequest::*;
        match self {
            Status | Me => vec![],
            PermissionList => vec!["core.permission.list"],
            PluginList => vec!["core.plugin.list"],
            UserList => vec!["core.user.list"],
            UserGet { .. } => vec!["core.user.get"],
            UserCreate(fields) => {
                let mut p = vec!["core.user.create"];
                p.extend(fields.permissions());
                p
            }
            UserUpdate(fields) => {
                let mut p = fields.permissions();
                if p.is_empty() {
                    p.push("core.user.get");
                }
                p
            }
            UserDelete { .. } => vec!["core.user.delete"],
            UserRevokeTokens { user } | TokenCreate { user } => {
                if store::users::key(user) == store::users::key(&actor.name) {
                    vec!["core.user.revoke_token"]
                } else {
                    vec!["core.user.revoke_other_token"]
                }
            }
            TokenList { user } => match user {
                Some(u) if store::users::key(u) == store::users::key(&actor.name) => {
                    vec!["core.user.revoke_token"]
                }
                _ => vec!["core.user.revoke_other_token"],
            },
            // Whose token it is is only known after a lookup; `run` checks that.
            TokenRevoke { .. } => vec!["core.user.revoke_token"],
            RoleList => vec!["core.role.list"],
            RoleCreate(_) => vec!["core.role.create"],
            RoleUpdate(_) => vec!["core.role.update"],
            RoleDelete { .. } => vec!["core.role.delete"],
            HostList => vec!["core.host.list"],
            HostRevoke { .. } => vec!["core.host.revoke_token"],
            HostGet { .. } => vec!["core.host.list"],
            HostInstallFactorio { .. } => vec!["core.host.list", "core.host.install_factorio"],
            HostRemoveFactorio { .. } => vec!["core.host.list", "core.host.remove_factorio"],
            JoinTokenGet | JoinTokenRotate => vec!["core.host.generate_token"],
            InstanceList => vec!["core.instance.list"],
            InstanceGet { .. } => vec!["core.instance.get"],
            InstanceCreate(_) => vec!["core.instance.create"],
            InstanceUpdateConfig(_) => vec!["core.instance.update_config"],
            InstanceRevealSecret(_) => vec![
                "core.instance.get_config",
                crate::config::fields::REVEAL_INSTANCE_SECRET,
            ],
            ConfigSchema => vec![],
            ControllerConfigGet => vec!["core.controller.get_config"],
            ControllerConfigUpdate { .. } => vec![
                "core.controller.get_config",
                "core.controller.update_config",
            ],
            HostConfigGet { .. } => vec!["core.host.get_config"],
            HostConfigUpdate { .. } => vec!["core.host.get_config", "core.host.update_config"],
            InstanceDelete { .. } => vec!["core.instance.delete"],
            InstanceAssign(_) => vec!["core.instance.assign"],
            AuditList { .. } => vec!["core.log.query"],
            InstanceStart { .. } => vec!["core.instance.start"],
            InstanceStop { .. } => vec!["core.instance.stop"],
            InstanceRestart { .. } => vec!["core.instance.restart"],
            InstanceKill { .. } => vec!["core.instance.kill"],
            InstanceRcon { .. } => vec!["core.instance.send_rcon"],
            InstanceLogs { .. } => vec!["core.log.query"],
            SaveList { .. } | BackupList { .. } | ScenarioList { .. } => {
                vec!["core.instance.save.list"]
            }
            SaveCreate { .. } | BackupCreate { .. } => vec!["core.instance.save.create"],
            ModList => vec!["core.mod.list"],
            ModDelete { .. } => vec!["core.mod.delete"],
            History => vec!["core.instance.list"],
            ChatSend { .. } => vec!["global_chat.send"],
            ChatHistory => vec!["global_chat.view"],
            ResearchList => vec![crate::plugins::research_sync::PERMISSION_LIST],
            InventoryList | InventoryGet { .. } => {
                vec![crate::plugins::inventory_sync::PERMISSION_VIEW]
            }
            InventoryImport { .. } | InventoryRelease { .. } => vec![
                crate::plugins::inventory_sync::PERMISSION_VIEW,
                crate::plugins::inventory_sync::PERMISSION_MODIFY,
            ],
            StorageList => vec![crate::plugins::subspace_storage::PERMISSION_VIEW],
            StorageSet { .. } | StorageResolve { .. } => vec![
                crate::plugins::subspace_storage::PERMISSION_VIEW,
                crate::plugins::subspace_storage::PERMISSION_SET,
            ],
            SaveDelete { .. } => vec!["core.instance.save.delete"],
            SaveRename { .. } => vec!["core.instance.save.rename"],
            SaveCopy { .. } => vec!["core.instance.save.copy"],
            SaveUse { .. } => vec!["core.instance.save.use"],
            SaveTransfer { copy, .. } => {
                let mut p = vec!["core.instance.save.transfer"];
                if !copy {
                    p.push("core.instance.save.delete");
                }
                p
            }
            BackupRestore { .. } => vec!["core.instance.backup.restore"],
            InstanceBulk { action, .. } => vec![action.permission()],
            ScheduleGet { .. } => vec!["core.instance.schedule.get"],
            ScheduleSet { .. } | ScheduleDelete { .. } => vec!["core.instance.schedule.update"],
            Players(r) => r.permissions(),
            ExternalPlugin(r) => r.permissions(),
            Portal(r) => r.permissions(),
            Packs(r) => r.permissions(),
        }
    }

    /// Checks permissions, then runs the request.
    pub async fn execute(self, ctl: &Controller, actor: &Actor) -> Result<Reply, ApiError> {
        for p in self.permissions(actor) {
            actor.require(p)?;
        }
        self.run(ctl, actor).await
    }

    async fn run(self, ctl: &Controller, actor: &Actor) -> Result<Reply, ApiError> {
        use ControlRequest::*;
        let who = actor.audit_name();
        let store = &ctl.store;
        let reads_config = actor.has(super::hub::INSTANCE_CONFIG_READ);
        match self {
            Status => ok(ctl.status()),
            Me => ok(json!({ "name": actor.name, "permissions": actor.permissions })),
            PermissionList => ok(crate::permissions::all().collect::<Vec<_>>()),
            PluginList => ok(ctl.plugin_list().await),
            UserList => ok(store.read(store::users::list).await?),
            UserGet { user } => ok(store.read(move |c| store::users::get(c, &user)).await?),
            UserCreate(fields) => {
                let change = fields.change();
                let g = grantor(actor);
                let u = store
                    .write(move |c| {
                        if let Some(roles) = &change.roles {
                            g.may_grant(&grants::role_permissions(c, roles)?)?;
                        }
                        store::users::create(c, &who, &fields.user, &change)
                    })
                    .await?;
                ctl.hub.publish(Event::user_updated(&u));
                created(u)
            }
            UserUpdate(fields) => {
                let change = fields.change();
                let g = grantor(actor);
                let (u, changed) = store
                    .write(move |c| {
                        let current = store::users::get(c, &fields.user)?;
                        // Nothing to change (`{}`, or every value as it is): no write, no
                        // audit row, no broadcast — anyone may send these, as often as they like.
                        if changes_nothing(&current, &change) {
                            return Ok((current, false));
                        }
                        if let Some(roles) = &change.roles {
                            let old = &current.roles;
                            let added: Vec<i64> =
                                roles.iter().copied().filter(|r| !old.contains(r)).collect();
                            g.may_grant(&grants::role_permissions(c, &added)?)?;
                        }
                        grants::keeping_an_admin(c, || {
                            store::users::update(c, &who, &fields.user, &change)
                        })
                        .map(|u| (u, true))
                    })
                    .await?;
                if changed {
                    ctl.hub.grants_changed();
                    ctl.hub.publish(Event::user_updated(&u));
                }
                ok(u)
            }
            UserDelete { user } => {
                let u = store
                    .write(move |c| {
                        grants::keeping_an_admin(c, || store::users::delete(c, &who, &user))
                    })
                    .await?;
                ctl.hub.grants_changed();
                ctl.hub.close_user_sessions(u.id, "user deleted");
                ctl.hub.publish(Event::user_deleted(&u));
                ok(json!({ "deleted": u.name }))
            }
            UserRevokeTokens { user } => {
                let name = user.clone();
                let n = store
                    .write(move |c| store::tokens::revoke_all(c, &who, &user))
                    .await?;
                let u = store.read(move |c| store::users::get(c, &name)).await?;
                ctl.hub.grants_changed();
                ctl.hub.close_user_sessions(u.id, "tokens revoked");
                ok(json!({ "revoked": n }))
            }
            TokenList { user } => ok(store
                .read(move |c| store::tokens::list(c, user.as_deref()))
                .await?),
            TokenCreate { user } => {
                let g = grantor(actor);
                let (id, token) = store
                    .write(move |c| {
                        // A token for someone else carries their permissions: only for someone
                        // who holds nothing the actor does not.
                        let target = store::users::get(c, &user)?;
                        if store::users::key(&target.name) != store::users::key(&g.name) {
                            g.may_grant(&store::users::permissions(c, target.id)?)?;
                        }
                        store::tokens::within_limit(c, &target.name)?;
                        store::tokens::issue(c, &who, &user)
                    })
                    .await?;
                created(json!({ "id": id, "token": token }))
            }
            TokenRevoke { id } => {
                let info = store.read(move |c| store::tokens::get(c, id)).await?;
                if store::users::key(&info.user) != store::users::key(&actor.name) {
                    actor.require("core.user.revoke_other_token")?;
                }
                let info = store
                    .write(move |c| store::tokens::revoke(c, &who, id))
                    .await?;
                ctl.hub.grants_changed();
                let user = info.user.clone();
                if let Ok(u) = store.read(move |c| store::users::get(c, &user)).await {
                    ctl.hub.close_user_sessions(u.id, "token revoked");
                }
                ok(info)
            }
            RoleList => ok(store.read(store::roles::list).await?),
            RoleCreate(fields) => {
                let name = fields
                    .name
                    .ok_or_else(|| ApiError::bad_request("a role needs a \"name\""))?;
                let description = fields.description.unwrap_or_default();
                let permissions = fields.permissions.unwrap_or_default();
                let g = grantor(actor);
                let r = store
                    .write(move |c| {
                        g.may_grant(&permissions)?;
                        store::roles::create(c, &who, &name, &description, &permissions)
                    })
                    .await?;
                ctl.hub.publish(Event::role_updated(&r));
                created(r)
            }
            RoleUpdate(fields) => {
                let id = fields
                    .id
                    .ok_or_else(|| ApiError::bad_request("which role? give its \"id\""))?;
                let g = grantor(actor);
                let r = store
                    .write(move |c| {
                        if let Some(new) = &fields.permissions {
                            let old = store::roles::get(c, id)?.permissions;
                            g.may_grant(new.iter().filter(|p| !old.contains(p)))?;
                        }
                        grants::keeping_an_admin(c, || {
                            store::roles::update(
                                c,
                                &who,
                                id,
                                fields.name.as_deref(),
                                fields.description.as_deref(),
                                fields.permissions.as_deref(),
                            )
                        })
                    })
                    .await?;
                ctl.hub.grants_changed();
                ctl.hub.publish(Event::role_updated(&r));
                ok(r)
            }
            RoleDelete { id } => {
                store
                    .write(move |c| {
                        grants::keeping_an_admin(c, || store::roles::delete(c, &who, id))
                    })
                    .await?;
                ctl.hub.grants_changed();
                ctl.hub.publish(Event::role_deleted(id));
                ok(json!({ "deleted": id }))
            }
            HostList => ok(ctl.host_views().await?),
            HostGet { host } => {
                let host = host.to_string();
                let h = store.read(move |c| store::hosts::get(c, &host)).await?;
                ok(ctl.host_view(h).await?)
            }
            HostInstallFactorio { host, version } => {
                ok(ctl.install_factorio(&who, host, version).await?)
            }
            HostRemoveFactorio { host, version } => {
                ok(ctl.remove_factorio(&who, host, version).await?)
            }
            HostRevoke { host } => {
                let host = host.to_string();
                let h = store
                    .write(move |c| store::hosts::revoke(c, &who, &host))
                    .await?;
                ctl.hub.close_host(h.id, "host token revoked");
                ok(ctl.host_view(h).await?)
            }
            JoinTokenGet => {
                ok(json!({ "token": store.write(store::tokens::ensure_join_token).await? }))
            }
            JoinTokenRotate => {
                let token = store
                    .write(move |c| store::tokens::rotate_join_token(c, &who))
                    .await?;
                ok(json!({ "token": token }))
            }
            InstanceList => {
                let views = ctl.instance_views().await?;
                ok(views
                    .into_iter()
                    .map(|v| super::view_for(reads_config, v))
                    .collect::<Vec<_>>())
            }
            InstanceGet { instance } => {
                let instance = instance.to_string();
                let rec = store
                    .read(move |c| store::instances::get(c, &instance))
                    .await?;
                ok(super::view_for(reads_config, ctl.instance_view(rec).await?))
            }
            InstanceCreate(new) => {
                let schema = ctl.schemas.get().instance.clone();
                let rec = store
                    .write(move |c| {
                        store::instances::create(c, &who, &new.name, &new.config, &schema)
                    })
                    .await?;
                let view = ctl.instance_view(rec).await?;
                ctl.hub.publish(Event::instance_updated(&view));
                created(super::view_for(reads_config, view))
            }
            InstanceUpdateConfig(change) => {
                let instance = change.instance.to_string();
                let schema = ctl.schemas.get().instance.clone();
                let rec = store
                    .write(move |c| {
                        store::instances::update_config(c, &who, &instance, &change.config, &schema)
                    })
                    .await?;
                ctl.notify_host_of(&rec).await;
                let view = ctl.instance_view(rec).await?;
                ctl.hub.publish(Event::instance_updated(&view));
                ok(super::view_for(reads_config, view))
            }
            InstanceRevealSecret(r) => ok(ctl.reveal_secret(&who, r.instance, &r.field).await?),
            ConfigSchema => ok(ctl.schemas.get().to_json()),
            ControllerConfigGet => ok(ctl.controller_config_view()),
            ControllerConfigUpdate { config } => {
                ok(ctl.update_controller_config(&who, &config).await?)
            }
            HostConfigGet { host } => ok(ctl.host_config(host, None).await?),
            HostConfigUpdate { host, config } => {
                ok(ctl.host_config(host, Some((&who, config))).await?)
            }
            InstanceDelete { instance } => ok(ctl.delete_instance(&who, instance).await?),
            InstanceAssign(a) => ctl.assign(&who, a.instance, a.host).await.and_then(ok),
            AuditList { limit } => {
                let limit = limit.unwrap_or(100).min(10_000);
                ok(store.read(move |c| store::audit::list(c, limit)).await?)
            }
            InstanceStart { instance, save } => ok(ctl.start(&who, instance, save).await?),
            InstanceStop { instance } => ok(ctl.stop(&who, instance).await?),
            InstanceRestart { instance } => ok(ctl.restart(&who, instance).await?),
            InstanceKill { instance } => ok(ctl.kill(&who, instance).await?),
            InstanceRcon { instance, command } => ok(ctl.rcon(&who, instance, command).await?),
            InstanceLogs { instance, lines } => {
                ok(ctl.logs(instance, lines.unwrap_or(100)).await?)
            }
            SaveList { instance } => ok(ctl.saves(instance).await?),
            ScenarioList { instance } => ok(ctl.scenarios(instance).await?),
            SaveCreate {
                instance,
                name,
                seed,
                map_gen_settings,
                map_settings,
                preset,
                map_exchange_string,
                scenario,
            } => {
                let map = json!({
                    "seed": seed, "map_gen_settings": map_gen_settings,
                    "map_settings": map_settings, "preset": preset,
                    "map_exchange_string": map_exchange_string, "scenario": scenario,
                });
                created(ctl.create_save(&who, instance, name, map).await?)
            }
            BackupCreate { instance } => ok(ctl.backup(instance).await?),
            BackupList { instance } => ok(ctl.backups(instance).await?),
            ModList => ok(store.read(store::mods::list).await?),
            ModDelete { file } => {
                let f = file.clone();
                let m = store
                    .write(move |c| store::mods::delete(c, &who, &f))
                    .await?;
                let _ = std::fs::remove_file(ctl.mods_dir().join(&file));
                ok(json!({ "deleted": m.name }))
            }
            History => ok(ctl.history.snapshot()),
            ChatHistory => ok(ctl
                .plugin_control(actor, "global_chat.history", json!({}))
                .await?),
            ChatSend { text, instance } => {
                let instance = match instance {
                    Some(r) => {
                        let r = r.to_string();
                        Some(store.read(move |c| store::instances::get(c, &r)).await?.id)
                    }
                    None => None,
                };
                let data = json!({ "text": text, "instance_id": instance });
                ok(ctl.plugin_control(actor, "global_chat.send", data).await?)
            }
            ResearchList => {
                if !ctl.plugins.is_enabled("research_sync") {
                    return Err(ApiError::not_found(
                        "the research_sync plugin is not enabled",
                    ));
                }
                ok(crate::plugins::research_sync::list(store).await?)
            }
            InventoryList => ok(ctl
                .plugin_control(actor, "inventory_sync.list", json!({}))
                .await?),
            InventoryGet { player } => ok(ctl
                .plugin_control(actor, "inventory_sync.get", json!({ "player": player }))
                .await?),
            InventoryImport { player, data } => ok(ctl
                .plugin_control(
                    actor,
                    "inventory_sync.import",
                    json!({ "player": player, "data": data }),
                )
                .await?),
            InventoryRelease { player } => ok(ctl
                .plugin_control(actor, "inventory_sync.release", json!({ "player": player }))
                .await?),
            StorageList => ok(ctl
                .plugin_control(actor, "subspace_storage.list", json!({}))
                .await?),
            StorageResolve { host, exports } => ok(ctl
                .plugin_control(
                    actor,
                    "subspace_storage.resolve",
                    json!({ "host": host, "exports": exports }),
                )
                .await?),
            StorageSet {
                name,
                count,
                quality,
            } => {
                let data = json!({ "name": name, "count": count, "quality": quality });
                ok(ctl
                    .plugin_control(actor, "subspace_storage.set", data)
                    .await?)
            }
            SaveDelete { instance, name } => ok(ctl
                .save_action(&who, instance, "delete", name, None)
                .await?),
            SaveRename { instance, name, to } => ok(ctl
                .save_action(&who, instance, "rename", name, Some(to))
                .await?),
            SaveCopy { instance, name, to } => created(
                ctl.save_action(&who, instance, "copy", name, Some(to))
                    .await?,
            ),
            SaveUse { instance, name } => {
                ok(ctl.save_action(&who, instance, "use", name, None).await?)
            }
            SaveTransfer {
                instance,
                name,
                to_instance,
                as_name,
                copy,
            } => ok(ctl
                .transfer_save(&who, instance, name, to_instance, as_name, copy)
                .await?),
            BackupRestore { instance, file } => {
                ok(ctl.restore_backup(&who, instance, file).await?)
            }
            InstanceBulk { action, host } => ok(ctl.bulk(&who, action, host).await?),
            ScheduleGet { instance } => ok(ctl.schedule_get(instance).await?),
            ScheduleSet { instance, fields } => {
                ok(ctl.schedule_set(&who, instance, fields).await?)
            }
            ScheduleDelete { instance } => ok(ctl.schedule_delete(&who, instance).await?),
            Players(r) => ok(r.run(ctl, actor).await?),
            ExternalPlugin(r) => ok(r.run(ctl, actor).await?),
            Portal(r) => ok(r.run(ctl, &who).await?),
            Packs(r) => match r.run(ctl, &who).await? {
                (201, v) => created(v),
                (_, v) => ok(v),
            },
        }
    }
}

/// Whether `change` leaves `user` exactly as it is.
fn changes_nothing(user: &store::User, change: &UserChange) -> bool {
    let same_roles = change.roles.as_ref().is_none_or(|r| {
        let mut new = r.clone();
        let mut old = user.roles.clone();
        new.sort_unstable();
        new.dedup();
        old.sort_unstable();
        new == old
    });
    same_roles
        && change.is_admin.is_none_or(|a| a == user.is_admin)
        && change
            .is_whitelisted
            .is_none_or(|w| w == user.is_whitelisted)
        && change.ban.as_ref().is_none_or(|(banned, reason)| {
            *banned == user.is_banned && (!banned || *reason == user.ban_reason)
        })
}

/// An instance that is running somewhere cannot be deleted or moved; stop it first.
pub fn refuse_if_active(ctl: &Controller, rec: &store::InstanceRecord) -> Result<(), ApiError> {
    let active = matches!(
        rec.status.as_str(),
        "starting" | "running" | "stopping" | "creating_save"
    );
    if active && rec.host_id.is_some_and(|h| ctl.hub.host_connected(h)) {
        return Err(ApiError::conflict(format!(
            "instance '{}' is {}; stop it first",
            rec.name, rec.status
        )));
    }
    Ok(())
}
