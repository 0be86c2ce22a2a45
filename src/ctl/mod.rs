//! `clustorio ctl`: the command-line client of the controller's REST API (docs/api.md), in the
//! spirit of clusterioctl: `clustorio ctl <noun> <verb>`. Every command is one or two HTTP calls;
//! `--json` prints the API's JSON unchanged, for scripts. Errors end the run with one line on
//! stderr (exit 1); clap reports usage errors (exit 2).

mod client;
mod cluster;
mod connection;
mod files;
mod instance;
mod inventory;
mod lua_plugin;
mod mods;
pub mod output;
mod plugin;
mod users;
mod versions;

use clap::{Args, Subcommand};
use std::path::PathBuf;

pub use client::ApiFailure;
pub use connection::{CONTROL_CONFIG_FILE, ConnectionArgs};

#[derive(Args, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    pub conn: ConnectionArgs,
    /// Print the API's JSON instead of tables and sentences (stable, for scripts).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand, Debug)]
pub enum CtlCommand {
    /// Check a token against a controller and save both to config-control.json.
    ///
    /// The token is read without echo on a terminal, or as the first line of stdin in scripts
    /// (or taken from --token / CLUSTORIO_TOKEN).
    Login {
        /// Controller URL, e.g. http://127.0.0.1:8081 or https://cluster.example.com
        url: String,
    },
    /// Controller name, version and uptime; with a token also hosts and instances.
    Status,
    /// Hosts: list them, revoke one, show or rotate the join token.
    #[command(subcommand)]
    Host(HostCommand),
    /// Instances: create, configure, assign, start, stop, RCON, logs.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Saves of an instance: list, create, upload, download, back up to the controller.
    #[command(subcommand)]
    Save(SaveCommand),
    /// The controller's mod store.
    #[command(subcommand)]
    Mod(ModCommand),
    /// Users: roles, admin, whitelist, bans, tokens.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles: named sets of permissions.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Settings: what instances, the controller and hosts can be configured with.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Permissions roles can grant.
    #[command(subcommand)]
    Permission(PermissionCommand),
    /// Plugins: which the cluster enables, and what each host runs.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Cluster chat (the global_chat plugin): send a message into the games.
    #[command(subcommand)]
    Chat(ChatCommand),
    /// research_sync: the cluster's technologies and progress.
    #[command(subcommand)]
    Research(ResearchCommand),
    /// inventory_sync: players' stored inventories (list, show, export, import, release).
    #[command(subcommand)]
    Inventory(inventory::InventoryCommand),
    /// subspace_storage: the cluster's item pool.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// The audit log, newest first.
    Audit {
        /// How many entries.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// List hosts, their connection and instances.
    #[command(visible_alias = "ls")]
    List,
    /// Revoke a host's token: it is disconnected and cannot reconnect.
    Revoke {
        /// Host name or id.
        host: String,
    },
    /// Show one host: its state, instances and installed Factorio versions.
    Show {
        /// Host name or id.
        host: String,
    },
    /// Download and install a Factorio version on a host (beside the ones it has).
    InstallFactorio {
        /// Host name or id.
        host: String,
        /// A version like 2.0.77, or stable or latest.
        #[arg(value_name = "VERSION")]
        factorio_version: String,
    },
    /// Delete an installed Factorio version from a host (refused while a game runs it or an
    /// instance asks for it by version).
    RemoveFactorio {
        /// Host name or id.
        host: String,
        /// The version, e.g. 2.0.76.
        #[arg(value_name = "VERSION")]
        factorio_version: String,
    },
    /// Print the join token new hosts register with (the slaves' MASTER_TOKEN).
    JoinToken {
        /// Replace it with a new one; the old one stops working.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// List instances.
    #[command(visible_alias = "ls")]
    List,
    /// Show one instance, with its config.
    Show {
        /// Instance name or id.
        instance: String,
    },
    /// Create an instance (unassigned until `instance assign`).
    Create {
        /// Name: letters, digits, '-', '_' or '.'.
        name: String,
        /// Initial config as a JSON object, e.g. '{"auto_start":true}'.
        #[arg(long, value_name = "JSON")]
        config_json: Option<String>,
        /// Set one config key (repeatable); the value is JSON if it parses, else a string.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Show or change an instance's config.
    #[command(subcommand)]
    Config(InstanceConfigCommand),
    /// Assign an instance to a host (no host: the least-loaded connected host).
    Assign {
        /// Instance name or id.
        instance: String,
        /// Host name or id.
        host: Option<String>,
    },
    /// Start an instance and wait until it is running.
    Start {
        /// Instance name or id.
        instance: String,
        /// Give up waiting after this many seconds (exit 1; the controller carries on).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Save to load (default: the newest).
        #[arg(long)]
        save: Option<String>,
    },
    /// Stop an instance (it saves first) and wait until it is stopped.
    Stop {
        /// Instance name or id.
        instance: String,
        /// Give up waiting after this many seconds (exit 1; the controller carries on).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Stop and start an instance; waits until it is running again.
    Restart {
        /// Instance name or id.
        instance: String,
        /// Give up waiting after this many seconds (exit 1; the controller carries on).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Start every stopped instance (of one host with --host).
    StartAll {
        #[arg(long)]
        host: Option<String>,
    },
    /// Stop every running instance (of one host with --host).
    StopAll {
        #[arg(long)]
        host: Option<String>,
    },
    /// Restart every running instance (of one host with --host).
    RestartAll {
        #[arg(long)]
        host: Option<String>,
    },
    /// Show, set or remove an instance's restart schedule.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Kill an instance's Factorio process without saving.
    Kill {
        /// Instance name or id.
        instance: String,
    },
    /// Delete an instance (refused while it runs).
    Delete {
        /// Instance name or id.
        instance: String,
    },
    /// Send an RCON command and print its output.
    Rcon {
        /// Instance name or id.
        instance: String,
        /// The command, e.g. /players online (words are joined with spaces; put -- before a command that starts with -).
        #[arg(required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Print an instance's recent log lines, or follow them.
    Logs {
        /// Instance name or id.
        instance: String,
        /// How many recent lines.
        #[arg(long, short = 'n', conflicts_with = "follow")]
        lines: Option<u64>,
        /// Keep printing new lines as they come (until interrupted).
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Print the schedule: when the next restart is and how the last one went.
    Show {
        /// Instance name or id.
        instance: String,
    },
    /// Restart daily at a UTC time (--daily 04:30) or every N hours (--every-hours 6).
    Set {
        /// Instance name or id.
        instance: String,
        /// Time of day, HH:MM in UTC.
        #[arg(
            long,
            value_name = "HH:MM",
            conflicts_with = "every_hours",
            required_unless_present = "every_hours"
        )]
        daily: Option<String>,
        /// Hours between restarts.
        #[arg(long, value_name = "N")]
        every_hours: Option<f64>,
        /// Warn players in game chat this many minutes ahead (default 5).
        #[arg(long, value_name = "MIN")]
        warn_minutes: Option<f64>,
        /// Skip a restart while players are online.
        #[arg(long)]
        skip_if_players: bool,
    },
    /// Remove the schedule.
    Clear {
        /// Instance name or id.
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum InstanceConfigCommand {
    /// Print the instance's config (JSON; secrets show as set or not set).
    Show {
        /// Instance name or id.
        instance: String,
    },
    /// Set a setting; dotted keys reach into objects (server_settings.max_players 10). The value
    /// is read by the setting's type (`ctl config schema` lists them); the controller refuses
    /// what breaks the setting's rule.
    Set {
        /// Instance name or id.
        instance: String,
        /// Key, e.g. auto_start or server_settings.name.
        key: String,
        /// Value, read by the setting's type: true/false, a number, text, a list as a,b or JSON. Omit with --unset.
        #[arg(required_unless_present = "unset")]
        value: Option<String>,
        /// Back to the default instead.
        #[arg(long, conflicts_with = "value")]
        unset: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SaveCommand {
    /// List an instance's saves (on its host and backed up on the controller).
    #[command(visible_alias = "ls")]
    List {
        /// Instance name or id.
        instance: String,
    },
    /// Save a running game, or create a new map for a stopped instance (with --seed,
    /// --map-gen-settings, --map-settings or --preset: a new map, even if saves exist).
    Create {
        /// Instance name or id.
        instance: String,
        /// Save name (default: chosen by the host).
        name: Option<String>,
        /// Map seed (0 to 4294967295).
        #[arg(long)]
        seed: Option<u32>,
        /// A map-gen-settings.json file (Factorio's format: autoplace_controls, cliff_settings, …).
        #[arg(long, value_name = "FILE")]
        map_gen_settings: Option<PathBuf>,
        /// A map-settings.json file (pollution, enemy_evolution, enemy_expansion, …).
        #[arg(long, value_name = "FILE")]
        map_settings: Option<PathBuf>,
        /// A Factorio map preset: default, rich-resources, marathon, death-world, death-world-marathon, rail-world, ribbon-world, island.
        #[arg(long)]
        preset: Option<String>,
        /// A map exchange string (`>>>…<<<`, from Factorio's map generator: Export), or a file
        /// holding one; its settings apply under --map-gen-settings / --map-settings.
        #[arg(long, value_name = "STRING|FILE")]
        map_exchange_string: Option<String>,
        /// Start the new game from a scenario: NAME (the instance's scenarios/) or MOD/NAME
        /// (e.g. base/freeplay); `ctl save scenarios INSTANCE` lists them.
        #[arg(long, value_name = "[MOD/]NAME")]
        scenario: Option<String>,
    },
    /// List the scenarios a new game of an instance can start from.
    Scenarios {
        /// Instance name or id.
        instance: String,
    },
    /// Upload a scenario zip (control.lua at its root or in one folder) into the instance's
    /// scenarios/, for `save create --scenario NAME`; replaces one of that name.
    ScenarioUpload {
        /// Instance name or id.
        instance: String,
        /// The scenario zip.
        file: PathBuf,
        /// Scenario name (default: the file's name without .zip).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a save from the instance's host.
    Delete {
        /// Instance name or id.
        instance: String,
        /// Save name, e.g. world.zip.
        save: String,
    },
    /// Rename a save (refused if the new name is taken).
    Rename {
        /// Instance name or id.
        instance: String,
        save: String,
        /// New name, e.g. before-boss.zip.
        to: String,
    },
    /// Copy a save under a new name (refused if the name is taken).
    Copy {
        /// Instance name or id.
        instance: String,
        save: String,
        to: String,
    },
    /// Choose the save the instance's next start loads.
    Use {
        /// Instance name or id.
        instance: String,
        save: String,
    },
    /// Move a save to another instance, on any host (--copy keeps the original).
    Transfer {
        /// Source instance name or id.
        instance: String,
        save: String,
        /// Target instance name or id.
        to_instance: String,
        /// Name at the target (default: the same; a taken name gets a suffix).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Keep the save on the source instance.
        #[arg(long)]
        copy: bool,
    },
    /// Put one of the controller's backups back (the instance is stopped first and started
    /// again if it ran; its current save is kept as a backup).
    Restore {
        /// Instance name or id.
        instance: String,
        /// Backup file, as `save backups` lists it.
        file: String,
    },
    /// Upload a save zip to an instance.
    Upload {
        /// Instance name or id.
        instance: String,
        /// The save zip.
        file: PathBuf,
        /// Name on the host (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the controller's backup copies of an instance's saves, newest first.
    Backups {
        /// Instance name or id.
        instance: String,
    },
    /// Download a save zip (from the host, or with --backup one of the controller's copies).
    Download {
        /// Instance name or id.
        instance: String,
        /// Save name, e.g. world.zip (with --backup: the file name `save backups` shows).
        save: String,
        /// Download one of the controller's backup copies.
        #[arg(long)]
        backup: bool,
        /// Where to write it (default: the save's name in the working directory; - for stdout).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Copy the instance's current save to the controller.
    Backup {
        /// Instance name or id.
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ModCommand {
    /// List the mods in the controller's mod store.
    #[command(visible_alias = "ls")]
    List,
    /// Upload mod zips (named like Name_1.2.3.zip).
    Upload {
        /// Mod zip files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Delete a mod from the store.
    Delete {
        /// Mod file name, e.g. Name_1.2.3.zip.
        file: String,
    },
    /// The mod portal: search, install with dependencies, update checks.
    #[command(flatten)]
    Portal(mods::PortalCommand),
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// List users.
    #[command(visible_alias = "ls")]
    List,
    /// Show one user.
    Show {
        /// User name or id.
        user: String,
    },
    /// Create a user.
    Create {
        /// User name (the Factorio player name).
        name: String,
        /// Role names or ids (repeatable, or comma separated).
        #[arg(long = "role", value_delimiter = ',')]
        roles: Vec<String>,
        /// Make the user a Factorio admin.
        #[arg(long)]
        admin: bool,
        /// Put the user on the whitelist.
        #[arg(long)]
        whitelisted: bool,
    },
    /// Delete a user.
    Delete {
        /// User name or id.
        user: String,
    },
    /// Replace a user's roles (none given: no roles).
    SetRoles {
        /// User name or id.
        user: String,
        /// Role names or ids.
        roles: Vec<String>,
    },
    /// Make a user a Factorio admin on every instance (a name never seen becomes a user).
    #[command(visible_alias = "promote")]
    Admin {
        /// User name or id.
        user: String,
        /// Take admin away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Put a user on the whitelist.
    Whitelist {
        /// User name or id.
        user: String,
        /// Take the user off the whitelist instead.
        #[arg(long)]
        remove: bool,
    },
    /// Ban a user from every instance.
    Ban {
        /// User name or id.
        user: String,
        /// Reason shown to the player.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a user's ban.
    Unban {
        /// User name or id.
        user: String,
    },
    /// Take a user's Factorio admin away on every instance.
    Demote {
        /// User name or id.
        user: String,
    },
    /// Kick a player from the games they are in now.
    Kick {
        /// User name or id.
        user: String,
        /// Reason shown to the player.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Players: who is online where, with their totals (online first).
    Players {
        /// Only names containing this (any case).
        #[arg(long)]
        search: Option<String>,
    },
    /// A player's statistics per instance and their recent sessions.
    History {
        /// User name or id.
        user: String,
    },
    /// Import Factorio's server-adminlist.json / server-banlist.json / server-whitelist.json.
    /// A malformed entry in any file imports nothing.
    Import {
        /// An admin list (JSON array of names).
        #[arg(long, value_name = "FILE")]
        admins: Option<std::path::PathBuf>,
        /// A ban list (names, or {"username", "reason"} objects).
        #[arg(long, value_name = "FILE")]
        bans: Option<std::path::PathBuf>,
        /// A whitelist (JSON array of names).
        #[arg(long, value_name = "FILE")]
        whitelist: Option<std::path::PathBuf>,
        /// Only show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Also take the flag from users missing from a given file.
        #[arg(long)]
        replace: bool,
    },
    /// Export the cluster's lists in Factorio's file formats ("-" writes to stdout).
    Export {
        #[arg(long, value_name = "FILE")]
        admins: Option<std::path::PathBuf>,
        #[arg(long, value_name = "FILE")]
        bans: Option<std::path::PathBuf>,
        #[arg(long, value_name = "FILE")]
        whitelist: Option<std::path::PathBuf>,
    },
    /// Issue a login token for a user (printed once), or list / revoke its tokens.
    Token {
        /// User name or id.
        user: String,
        /// List the user's tokens instead.
        #[arg(long, conflicts_with_all = ["revoke", "revoke_all"])]
        list: bool,
        /// Revoke the token with this id.
        #[arg(long, value_name = "ID", conflicts_with = "revoke_all")]
        revoke: Option<i64>,
        /// Revoke every token of the user.
        #[arg(long)]
        revoke_all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// List roles.
    #[command(visible_alias = "ls")]
    List,
    /// Create a role.
    Create {
        /// Role name.
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Permissions (repeatable, or comma separated); see `ctl permission list`.
        #[arg(long = "permission", value_delimiter = ',')]
        permissions: Vec<String>,
    },
    /// Change a role's name, description or permissions.
    Edit {
        /// Role name or id.
        role: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Replace the permissions with these (comma separated; empty: none).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        set: Option<Vec<String>>,
        /// Add permissions (repeatable, or comma separated).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Remove permissions (repeatable, or comma separated).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// Delete a role.
    Delete {
        /// Role name or id.
        role: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// List every setting: name, type, default, secret/restart flags and description.
    Schema {
        /// Only one kind: instance, controller or host.
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum PermissionCommand {
    /// List every permission with its description.
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// List the built-in plugins: version, enabled on the cluster, the version each host runs.
    /// Then the external plugins: version, connected, last seen, queued messages.
    #[command(visible_alias = "ls")]
    List,
    #[command(flatten)]
    LuaOnly(lua_plugin::LuaPluginCommand),
    /// Create a token for the external plugin NAME (shown once; replaces an earlier one).
    Token { name: String },
    /// Revoke the external plugin's token; a connected session is closed at once.
    Revoke { name: String },
    /// Set how many messages a second the external plugin may send.
    Limit { name: String, messages_per_s: u64 },
    /// Send a request the external plugin declared (`NAME.REQUEST`), with optional JSON data.
    Call {
        name: String,
        request: String,
        data: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ChatCommand {
    /// Show TEXT in every running game with global_chat as `[Console] <you>: TEXT`.
    Send {
        /// Only this instance (name or id).
        #[arg(long)]
        instance: Option<String>,
        /// The message.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ResearchCommand {
    /// List the technologies the cluster knows: level, researched, progress.
    #[command(visible_alias = "ls")]
    List,
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// List the items in the pool (and those on their way to games).
    #[command(visible_alias = "ls")]
    List,
    /// Settle what a host that is gone for good left pending (revoke it first): its grants
    /// go back to the pool, its pending exports are credited (or cancelled). Audited.
    Resolve {
        /// Host name or id (revoked).
        host: String,
        /// credit: the exports reach the pool; cancel: a save of its games is restored
        /// elsewhere, with the items in its chests again.
        #[arg(long, default_value = "credit", value_parser = ["credit", "cancel"])]
        exports: String,
    },
    /// Set an item's count by hand (an admin correction, written to the audit log).
    Set {
        /// The item's name, e.g. iron-plate.
        item: String,
        /// The new count (0 or more).
        count: i64,
        /// The item's quality.
        #[arg(long, default_value = "normal")]
        quality: String,
    },
}

/// Runs one ctl command to completion.
pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    // One thread is plenty for one command, and starts fastest.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(args))
}

async fn dispatch(args: CtlArgs) -> anyhow::Result<()> {
    let out = output::Output::detect(args.json);
    if let CtlCommand::Login { url } = &args.command {
        return connection::login(&args.conn, url, &out).await;
    }
    let client = connection::connect(&args.conn)?;
    match args.command {
        CtlCommand::Login { .. } => Ok(()),
        CtlCommand::Status => cluster::status(&client, &out).await,
        CtlCommand::Host(cmd) => cluster::host(&client, &out, cmd).await,
        CtlCommand::Audit { limit } => cluster::audit(&client, &out, limit).await,
        CtlCommand::Permission(PermissionCommand::List) => {
            cluster::permissions(&client, &out).await
        }
        CtlCommand::Plugin(PluginCommand::LuaOnly(cmd)) => {
            lua_plugin::run(&client, &out, cmd).await
        }
        CtlCommand::Plugin(PluginCommand::List) => plugin::list(&client, &out).await,
        CtlCommand::Plugin(PluginCommand::Token { name }) => {
            plugin::token(&client, &out, &name).await
        }
        CtlCommand::Plugin(PluginCommand::Revoke { name }) => {
            plugin::revoke(&client, &out, &name).await
        }
        CtlCommand::Plugin(PluginCommand::Limit {
            name,
            messages_per_s,
        }) => plugin::limit(&client, &out, &name, messages_per_s).await,
        CtlCommand::Plugin(PluginCommand::Call {
            name,
            request,
            data,
        }) => plugin::call(&client, &out, &name, &request, data).await,
        CtlCommand::Chat(ChatCommand::Send { instance, text }) => {
            cluster::chat_send(&client, &out, instance, &text.join(" ")).await
        }
        CtlCommand::Research(ResearchCommand::List) => cluster::research(&client, &out).await,
        CtlCommand::Inventory(cmd) => inventory::run(&client, &out, cmd).await,
        CtlCommand::Storage(cmd) => cluster::storage(&client, &out, cmd).await,
        CtlCommand::Instance(cmd) => instance::run(&client, &out, cmd).await,
        CtlCommand::Save(cmd) => files::save(&client, &out, cmd).await,
        CtlCommand::Mod(cmd) => files::mods(&client, &out, cmd).await,
        CtlCommand::User(cmd) => users::user(&client, &out, cmd).await,
        CtlCommand::Role(cmd) => users::role(&client, &out, cmd).await,
        CtlCommand::Config(ConfigCommand::Schema { kind }) => {
            cluster::schema(&client, &out, kind).await
        }
    }
}
