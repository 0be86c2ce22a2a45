//! The controller (master): HTTP API, link socket, metrics and the cluster's state.

mod addresses;
mod api;
pub mod auth;
mod console;
pub mod error;
mod files;
mod history;
mod hub;
mod instances;
mod metrics;
mod mod_packs;
pub mod players;
pub mod plugin_kv;
pub mod plugin_lua;
pub mod plugins;
mod portal;
pub mod requests;
mod saves;
mod schedule;
mod session;
mod settings;
mod socket;
mod versions;
mod web;
pub mod ws;

use crate::config::{ControllerConfig, Schemas};
use crate::link::SOCKET_PATH;
use crate::shutdown::Shutdown;
use crate::store::{self, HostRecord, InstanceRecord, Store};
use anyhow::Context;
use error::ApiError;
use hub::{Event, Hub};
use metrics::Metrics;
use requests::Ref;
use serde_json::{Value, json};
use session::Session;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::Filter;

/// How long the controller waits for a host to answer a request.
const HOST_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Controller {
    /// The settings it started with.
    pub cfg: ControllerConfig,
    /// The settings as `config-master.json` and the environment said at the start (without
    /// command-line overrides such as `--port`), and as they say now: edits apply live where
    /// their field allows, else at the next start.
    loaded: ControllerConfig,
    settings: std::sync::Mutex<ControllerConfig>,
    /// Every setting (instance, controller, host): the core's and the plugins'.
    pub schemas: crate::config::LiveSchemas,
    pub store: Store,
    hub: Arc<Hub>,
    metrics: Metrics,
    started: Instant,
    pub shutdown: Shutdown,
    /// The data directory (saves, backups, mods live beside the database).
    data_dir: std::path::PathBuf,
    /// Live facts hosts report; not stored, hosts resend them after a reconnect.
    live: std::sync::Mutex<HashMap<i64, Live>>,
    history: history::History,
    /// How many game ports each host has (it says so when it connects).
    host_ports: std::sync::Mutex<HashMap<i64, usize>>,
    pub plugins: plugins::Plugins,
    /// This controller, for the contexts handed to plugins.
    me: std::sync::Weak<Controller>,
    /// How each host runs Factorio (`process`/`docker`) and why it cannot, if it says so.
    host_backends: std::sync::Mutex<HashMap<i64, Value>>,
    /// Each host's addresses for players (what it reports and where its link comes from).
    join_addresses: std::sync::Mutex<HashMap<i64, crate::join_address::HostAddresses>>,
    /// List changes sent to the games lately, so their echoes are not taken for new ones.
    player_echoes: players::Echoes,
    /// Start, stop, assign and delete of one instance run one at a time (`instances.rs`).
    lifecycle: instances::Lifecycle,
    /// External-process plugins (`role: "plugin"` on the link).
    pub external: crate::plugins::external::External,
    /// Each host's Factorio installs and installs in progress (`versions.rs`).
    factorio: versions::HostVersions,
}

/// What a host last reported about an instance beyond its status.
#[derive(Default, Clone)]
struct Live {
    /// The host has reported on this instance in its current session; until then the stored
    /// status may be stale (the controller or the host restarted), so the API says `unknown`.
    confirmed: bool,
    players: Vec<String>,
    message: Option<String>,
    /// The Docker backend's container: id, name, image, limits.
    container: Option<Value>,
}

/// Runs the controller in `dir` until shutdown.
pub async fn run(dir: &Path, cfg: ControllerConfig) -> anyhow::Result<()> {
    let plugins = plugins::Plugins::load(&cfg.plugins)?;
    let store = Store::open(dir)?;
    plugins::migrate(&store, &plugins).await?;
    players::migrate(&store).await?;
    plugin_kv::migrate(&store).await?;
    plugin_lua::migrate(&store).await?;
    plugins::apply_migrations(
        &store,
        "external_plugins",
        crate::plugins::external::store::MIGRATIONS,
        "the external plugins' table",
    )
    .await?;
    let external = crate::plugins::external::External::load(&store)?;
    let mut plugin_settings = crate::plugins::settings();
    plugin_settings.extend(external.schema_settings());
    let loaded = ControllerConfig::load(dir).unwrap_or_else(|_| cfg.clone());
    if let Some((user, token)) = bootstrap(&store, &cfg).await? {
        println!("First start: created admin user '{user}'. Login token (shown once): {token}");
    }
    let metrics = Metrics::new()?;
    let (hosts, instances) = store
        .read(|c| Ok((store::hosts::list(c)?, store::instances::list(c)?)))
        .await?;
    metrics.census.seed(&hosts, &instances);
    let ctl = Arc::new_cyclic(|me| Controller {
        plugins,
        me: me.clone(),
        hub: Arc::new(Hub::new(
            session_limits(&cfg),
            store.clone(),
            metrics.census.clone(),
            metrics.slow_consumers.clone(),
        )),
        metrics,
        started: Instant::now(),
        shutdown: Shutdown::new(),
        data_dir: dir.to_path_buf(),
        live: std::sync::Mutex::new(HashMap::new()),
        history: history::History::default(),
        host_ports: std::sync::Mutex::new(HashMap::new()),
        host_backends: std::sync::Mutex::new(HashMap::new()),
        join_addresses: std::sync::Mutex::new(HashMap::new()),
        player_echoes: players::Echoes::default(),
        lifecycle: instances::Lifecycle::default(),
        external,
        factorio: versions::HostVersions::default(),
        store,
        loaded: loaded.clone(),
        settings: std::sync::Mutex::new(loaded),
        schemas: crate::config::LiveSchemas::new(Schemas::new(&plugin_settings)),
        cfg,
    });
    ctl.shutdown.listen_for_signals()?;
    console::spawn(ctl.clone());

    let addr: SocketAddr = format!("{}:{}", ctl.cfg.bind_address, ctl.cfg.port)
        .parse()
        .with_context(|| format!("invalid bind address '{}'", ctl.cfg.bind_address))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another program using port {}?",
            ctl.cfg.port
        )
    })?;
    let local = listener.local_addr()?;
    // warp's routes on our own accept loop: connections that never send a request are closed
    // after a timeout, and at most so many may wait at once (file descriptors stay free).
    let admission = crate::limits::Admission {
        max_silent: ctl.cfg.max_silent_connections,
        first_request_timeout: crate::limits::millis(ctl.cfg.first_request_timeout_ms),
    };
    let server = crate::limits::serve(
        listener,
        routes(ctl.clone()),
        admission,
        Arc::new(ConnectionEvents(ctl.metrics.connections_dropped.clone())),
        {
            let s = ctl.shutdown.clone();
            async move { s.wait().await }
        },
    );
    let server = tokio::spawn(server);

    let reaper = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            let window = Duration::from_millis(ctl.cfg.resume_window_ms);
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctl.hub.reap(window);
                crate::limits::release_free_memory();
            }
        })
    };

    let sampler = tokio::spawn(history::sample(ctl.clone()));
    let scheduler = schedule::spawn(ctl.clone());
    tracing::info!(address = %local, cluster = %ctl.cfg.cluster_name, "controller listening");
    println!(
        "Started clustorio controller on http://{local} (cluster '{}')",
        ctl.cfg.cluster_name
    );

    ctl.shutdown.wait().await;
    ctl.hub.close_all("the controller is stopping");
    reaper.abort();
    sampler.abort();
    scheduler.abort();
    // Open keep-alive connections must not hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
    if let Err(e) = ctl.store.checkpoint().await {
        tracing::warn!(error = %e, "could not checkpoint the database at stop");
    }
    println!("Stopped");
    Ok(())
}

/// What one link session may hold, send and ask (DESIGN §3; settings in `fields::CONTROLLER`).
fn session_limits(cfg: &ControllerConfig) -> session::SessionLimits {
    session::SessionLimits {
        link: crate::link::Limits {
            outbox_frames: 100_000,
            outbox_bytes: SESSION_OUTBOX_BYTES,
            max_frame: cfg.max_message_bytes,
        },
        control_outbox_bytes: CONTROL_OUTBOX_BYTES,
        write_budget: SESSION_WRITE_BUDGET,
        request_rate: cfg.link_request_rate,
        request_burst: cfg.link_request_burst,
    }
}

/// Unacknowledged bytes one host session may hold (across a resume) before it is ended.
const SESSION_OUTBOX_BYTES: usize = 32 << 20;
/// The same for a web UI or ctl session.
const CONTROL_OUTBOX_BYTES: usize = 16 << 20;
/// Bytes waiting for one socket's writer before its peer counts as not reading.
const SESSION_WRITE_BUDGET: usize = 4 << 20;

/// Silent connections closed by the HTTP server, counted.
struct ConnectionEvents(prometheus::IntCounterVec);

impl crate::limits::AdmissionEvents for ConnectionEvents {
    fn dropped(&self, why: &'static str) {
        self.0.with_label_values(&[why]).inc();
    }
}

/// First boot: default roles, join token, and the admin users from `ADMIN_STRING`. Returns the
/// first admin's login token when it was just created.
async fn bootstrap(
    store: &Store,
    cfg: &ControllerConfig,
) -> anyhow::Result<Option<(String, String)>> {
    let admins = cfg.admin_names();
    let first = store
        .write(move |c| {
            store::roles::ensure_defaults(c)?;
            store::tokens::ensure_join_token(c)?;
            if !store::users::list(c)?.is_empty() {
                return Ok(None);
            }
            let change = store::users::UserChange {
                roles: Some(vec![crate::permissions::ROLE_ADMIN_ID]),
                is_admin: Some(true),
                ..Default::default()
            };
            let mut first = None;
            for name in &admins {
                store::users::create(c, "system", name, &change)?;
                if first.is_none() {
                    let (_, token) = store::tokens::issue(c, "system", name)?;
                    first = Some((name.clone(), token));
                }
            }
            Ok(first)
        })
        .await?;
    Ok(first)
}

fn routes(ctl: Arc<Controller>) -> crate::limits::Routes {
    let with_ctl = {
        let ctl = ctl.clone();
        warp::any().map(move || ctl.clone())
    };
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    let socket = warp::path("api")
        .and(warp::path("socket"))
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ws::UpgradeSlot>())
        .and(crate::limits::remote())
        .and(with_ctl.clone())
        .map(
            |headers: warp::http::HeaderMap,
             slot: Option<ws::UpgradeSlot>,
             addr: Option<SocketAddr>,
             ctl: Arc<Controller>| {
                // Frames above our limit get a clear error; far above it the socket is closed.
                let max = ctl.cfg.max_message_bytes * 4;
                ws::upgrade(&headers, slot, max, move |socket| {
                    socket::serve(socket, ctl, addr)
                })
            },
        );
    debug_assert_eq!(SOCKET_PATH, "/api/socket");

    let api = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(raw_query)
        .and(warp::header::optional::<String>("authorization"))
        .and(crate::limits::remote())
        .and(warp::body::stream())
        .and(with_ctl.clone())
        .then(
            |tail: warp::path::Tail,
             method: warp::http::Method,
             query: String,
             authorization: Option<String>,
             peer: Option<SocketAddr>,
             body,
             ctl: Arc<Controller>| async move {
                let m = method.to_string();
                let (route, status, value) = api::handle(
                    ctl.clone(),
                    method,
                    tail.as_str(),
                    &query,
                    authorization,
                    peer.map(|p| p.ip()),
                    Box::pin(body),
                )
                .await;
                ctl.metrics.http_request(route, &m, status.as_u16());
                use warp::http::header::{self, HeaderValue};
                use warp::reply::Reply;
                let allow = value["error"]["allow"].as_str().map(str::to_owned);
                let mut reply = warp::reply::json(&value).into_response();
                *reply.status_mut() = status;
                let headers = reply.headers_mut();
                // API replies can carry tokens and secrets: never cached, never sniffed.
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
                    headers.insert(header::ALLOW, allow);
                }
                reply
            },
        );

    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .and(with_ctl)
        .then(metrics::scrape);

    // The dashboard and scrape config hold no secrets: no token needed.
    let monitoring_files = warp::path("metrics")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and(warp::get())
        .and_then(|file: String| async move {
            let (body, content_type) = match file.as_str() {
                "grafana-dashboard.json" => (metrics::DASHBOARD, "application/json"),
                "prometheus.yml" => (metrics::SCRAPE_CONFIG, "application/yaml; charset=utf-8"),
                _ => return Err(warp::reject::not_found()),
            };
            Ok::<_, warp::Rejection>(warp::reply::with_header(body, "content-type", content_type))
        });

    socket
        .or(files::routes(ctl.clone()))
        .or(plugin_lua::routes(ctl))
        .or(api)
        .or(metrics)
        .or(monitoring_files)
        .or(web::routes())
        // Boxed: the nested filter types otherwise overflow the compiler's recursion limit in
        // release builds (optimised code checks the whole connection future's type).
        .map(|reply| Box::new(reply) as Box<dyn warp::Reply>)
        .boxed()
}

/// What an instance view shows only to readers of its config.
const CONFIG_KEYS: [&str; 3] = ["config", "secrets", "pending_restart"];

/// An instance view as `actor` may see it: without `core.instance.get_config` just the name,
/// status, host, port and players.
pub fn view_for(has_config: bool, mut view: Value) -> Value {
    if !has_config && let Value::Object(m) = &mut view {
        for k in CONFIG_KEYS {
            m.remove(k);
        }
    }
    view
}

impl Controller {
    /// The controller's settings as `config-master.json` now says.
    pub fn settings(&self) -> ControllerConfig {
        self.settings
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn status(&self) -> Value {
        json!({
            "name": "clustorio",
            "version": env!("CARGO_PKG_VERSION"),
            "cluster_name": self.cfg.cluster_name,
            "uptime_s": self.started.elapsed().as_secs(),
            // The login page offers "Log in with Factorio" when this is true.
            "factorio_login": self.plugins.is_enabled("player_auth"),
        })
    }

    /// What the API shows for an instance: the stored record plus the status the controller
    /// derives (`unassigned` without a host, `unknown` while its host is away).
    fn view_of(&self, rec: InstanceRecord, hosts: &HashMap<i64, String>) -> Value {
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|l| l.get(&rec.id).cloned())
            .unwrap_or_default();
        let status = match rec.host_id {
            None => "unassigned".to_string(),
            Some(h) if !self.hub.host_connected(h) || !live.confirmed => "unknown".to_string(),
            Some(_) => rec.status.clone(),
        };
        let live = if status == "unknown" {
            Live::default()
        } else {
            live
        };
        // Secrets never enter a view: readers see whether each is set.
        let (config, secrets) = self.schemas.get().instance.redact(&rec.config);
        let pending = match &rec.running_config {
            Some(running) => self
                .schemas
                .get()
                .instance
                .pending_restart(running, &rec.config),
            None => Vec::new(),
        };
        json!({
            "id": rec.id,
            "name": rec.name,
            "host_id": rec.host_id,
            "host": rec.host_id.and_then(|h| hosts.get(&h).cloned()),
            "status": status,
            "game_port": rec.game_port,
            "players_online": live.players,
            "join_address": self.join_address(rec.host_id, rec.game_port),
            "message": live.message,
            "container": live.container,
            "desired": rec.desired,
            "config": config,
            "secrets": secrets,
            "pending_restart": pending,
            "created_at": rec.created_at,
            "updated_at": rec.updated_at,
        })
    }

    /// One instance's view: reads only its own host's name (not every host's), so creating
    /// and changing instances costs the same however many hosts the cluster has.
    pub async fn instance_view(&self, rec: InstanceRecord) -> Result<Value, ApiError> {
        let mut names = HashMap::new();
        if let Some(host) = rec.host_id {
            let found = self
                .store
                .read(move |c| store::hosts::find(c, &host.to_string()))
                .await?;
            if let Some(h) = found {
                names.insert(h.id, h.name);
            }
        }
        Ok(self.view_of(rec, &names))
    }

    pub async fn instance_views(&self) -> Result<Vec<Value>, ApiError> {
        let (instances, hosts) = self
            .store
            .read(|c| Ok((store::instances::list(c)?, store::hosts::list(c)?)))
            .await?;
        let names = hosts.into_iter().map(|h| (h.id, h.name)).collect();
        Ok(instances
            .into_iter()
            .map(|i| self.view_of(i, &names))
            .collect())
    }

    /// A host's view: reads only its own instances, so it costs the same however large the
    /// cluster is.
    pub async fn host_view(&self, host: HostRecord) -> Result<Value, ApiError> {
        let id = host.id;
        let mine = self
            .store
            .read(move |c| store::instances::list_for_host(c, id))
            .await?;
        self.host_view_of(host, &mine)
    }

    /// A host's view from its record and its instances (`mine`; others are ignored).
    fn host_view_of(&self, host: HostRecord, mine: &[InstanceRecord]) -> Result<Value, ApiError> {
        let instances: Vec<Value> = mine
            .iter()
            .filter(|i| i.host_id == Some(host.id))
            .map(|i| json!({ "id": i.id, "name": i.name }))
            .collect();
        let mut v = serde_json::to_value(&host)
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
        v["connected"] = json!(self.hub.host_connected(host.id));
        v["backend"] = self
            .host_backends
            .lock()
            .ok()
            .and_then(|b| b.get(&host.id).cloned())
            .unwrap_or(Value::Null);
        v["instances"] = json!(instances);
        v["join_host"] = json!(self.join_host(host.id));
        (v["factorio_versions"], v["factorio_installing"]) = self.factorio.view(host.id);
        Ok(v)
    }

    /// Every host's view, from one read of hosts and instances.
    pub async fn host_views(&self) -> Result<Vec<Value>, ApiError> {
        let (hosts, instances) = self
            .store
            .read(|c| Ok((store::hosts::list(c)?, store::instances::list(c)?)))
            .await?;
        let mut by_host: HashMap<i64, Vec<InstanceRecord>> = HashMap::new();
        for i in instances {
            if let Some(h) = i.host_id {
                by_host.entry(h).or_default().push(i);
            }
        }
        hosts
            .into_iter()
            .map(|h| {
                let mine = by_host.remove(&h.id).unwrap_or_default();
                self.host_view_of(h, &mine)
            })
            .collect()
    }

    /// Assigns an instance to a host (named, or the least-loaded connected one), commits, then
    /// tells the hosts concerned over the link.
    pub async fn assign(
        &self,
        who: &str,
        instance: Ref,
        host: Option<Ref>,
    ) -> Result<Value, ApiError> {
        let (_guard, current) = self.lock_instance(&instance).await?;
        let instance = current.id.to_string();
        let target = match host {
            Some(h) => {
                let h = h.to_string();
                let rec = self.store.read(move |c| store::hosts::get(c, &h)).await?;
                if rec.revoked {
                    return Err(ApiError::conflict(format!(
                        "host '{}' is revoked",
                        rec.name
                    )));
                }
                rec.id
            }
            None => self.pick_host().await?,
        };
        // Moving a running instance stops it on its old host first (it saves and backs up
        // there), so it never runs on two hosts.
        if current.host_id != Some(target) {
            self.stop_before_leaving(who, &current).await?;
        }
        let who = who.to_string();
        let rec = self
            .store
            .write(move |c| store::instances::assign(c, &who, &instance, Some(target)))
            .await?;
        if let Some(old) = current.host_id.filter(|old| *old != target) {
            self.hub.send_to_host(
                old,
                "instance_unassigned",
                json!({ "id": rec.id, "name": rec.name }),
            );
        }
        // Freshly assigned, it is stopped: the controller knows this without the host.
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                rec.id,
                Live {
                    confirmed: true,
                    ..Live::default()
                },
            );
        }
        let delivered = self.notify_host_of(&rec).await;
        for host in [current.host_id, Some(target)].into_iter().flatten() {
            self.publish_host_view(host).await;
        }
        let mut view = self.instance_view(rec).await?;
        self.hub.publish(Event::instance_updated(&view));
        view["delivered"] = json!(delivered);
        Ok(view)
    }

    /// Automatic placement: the connected host with the fewest instances.
    async fn pick_host(&self) -> Result<i64, ApiError> {
        let connected = self.hub.connected_hosts();
        if connected.is_empty() {
            return Err(ApiError::conflict(
                "no host is connected; start a slave, or name a host to assign to",
            ));
        }
        let instances = self.store.read(store::instances::list).await?;
        let running = |h: i64| {
            instances
                .iter()
                .filter(|i| {
                    i.host_id == Some(h)
                        && matches!(i.status.as_str(), "running" | "starting" | "creating_save")
                })
                .count()
        };
        let assigned = |h: i64| instances.iter().filter(|i| i.host_id == Some(h)).count();
        let capacity = |h: i64| {
            self.host_ports
                .lock()
                .ok()
                .and_then(|p| p.get(&h).copied())
                .unwrap_or(usize::MAX)
        };
        connected
            .into_iter()
            .filter(|h| running(*h) < capacity(*h))
            .min_by_key(|h| (running(*h), assigned(*h), *h))
            .ok_or_else(|| {
                ApiError::conflict("every connected host uses all its game ports; add a host or give hosts more ports")
            })
    }

    /// Sends an instance's record to its host, if connected. True if the host accepted it.
    pub async fn notify_host_of(&self, rec: &InstanceRecord) -> bool {
        let Some(host) = rec.host_id else {
            return false;
        };
        if !self.hub.host_connected(host) {
            return false;
        }
        match self
            .hub
            .request_host(host, "instance_assigned", json!(rec), HOST_REQUEST_TIMEOUT)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(instance = %rec.name, host, code = %e.code, message = %e.message, "host did not take the assignment");
                false
            }
        }
    }

    /// A host's socket is attached: send it its desired state and tell subscribers. On a new
    /// session, what we knew of its instances is unconfirmed until it reports again. Reads only
    /// this host's instances: connecting costs the same however large the cluster is.
    async fn host_connected(&self, session: &Arc<Session>, resumed: bool) {
        let Some(host_id) = session.host_id() else {
            return;
        };
        if !resumed
            && let Ok(mine) = self
                .store
                .read(move |c| store::instances::list_for_host(c, host_id))
                .await
            && let Ok(mut live) = self.live.lock()
        {
            for i in &mine {
                live.remove(&i.id);
            }
        }
        // Only now does the host count as connected: nobody may see its old, unconfirmed state.
        self.hub.host_attached(session);
        tracing::info!(host_id, "host connected");
        // Read after attaching: an assignment committed before this point either reached the
        // host over the link already or is in this list.
        let mine = match self
            .store
            .read(move |c| {
                Ok((
                    store::hosts::find(c, &host_id.to_string())?,
                    store::instances::list_for_host(c, host_id)?,
                ))
            })
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, host_id, "reading a host's instances");
                return;
            }
        };
        // The cluster's name (for server names) and the users (for the admin, ban and white
        // lists: changes made while the host was away reach its running games).
        let users = self.user_records().await.unwrap_or(Value::Null);
        session.send_event(
            "instances_sync",
            json!({
                "instances": mine.1,
                "cluster_name": self.settings().cluster_name,
                "users": users,
            }),
        );
        if let (Some(host), instances) = mine {
            self.publish_host_of(host, instances);
        }
        self.plugins_host_connected(host_id).await;
    }

    async fn host_disconnected(&self, session: &Arc<Session>) {
        let Some(host_id) = session.host_id() else {
            return;
        };
        tracing::info!(host_id, "host disconnected");
        self.publish_host(host_id).await;
    }

    /// Publishes a host's view (its connection or its list of instances changed).
    pub async fn publish_host_view(&self, host_id: i64) {
        if let Ok(host) = self
            .store
            .read(move |c| store::hosts::get(c, &host_id.to_string()))
            .await
            && let Ok(view) = self.host_view(host).await
        {
            self.hub.publish(Event::host_updated(&view));
        }
    }

    /// Publishes a host's view and those of its instances (their derived status changes).
    async fn publish_host(&self, host_id: i64) {
        let found = self
            .store
            .read(move |c| {
                Ok((
                    store::hosts::find(c, &host_id.to_string())?,
                    store::instances::list_for_host(c, host_id)?,
                ))
            })
            .await;
        if let Ok((Some(host), mine)) = found {
            self.publish_host_of(host, mine);
        }
    }

    /// [`Self::publish_host`] from the host's record and its instances, already read.
    fn publish_host_of(&self, host: HostRecord, mine: Vec<InstanceRecord>) {
        if let Ok(view) = self.host_view_of(host.clone(), &mine) {
            self.hub.publish(Event::host_updated(&view));
        }
        let names = HashMap::from([(host.id, host.name)]);
        for rec in mine {
            let view = self.view_of(rec, &names);
            self.hub.publish(Event::instance_updated(&view));
        }
    }

    /// Requests a host sends to the controller.
    async fn host_request(&self, host_id: i64, name: &str, data: Value) -> Result<Value, ApiError> {
        if name == "plugin_lua.kv" {
            return self.plugin_lua_kv(host_id, data).await;
        }
        if let Some(result) = self.plugin_request(host_id, name, data).await {
            return result.map_err(|e| {
                ApiError::new(400, "plugin_error", format!("{}: {}", e.code, e.message))
            });
        }
        Err(ApiError::new(
            400,
            "unknown_request",
            format!("unknown host request \"{name}\""),
        ))
    }

    /// Whether instance `id` is assigned to `host_id` now.
    async fn assigned_to(&self, id: i64, host_id: i64) -> bool {
        self.store
            .read(move |c| store::instances::get(c, &id.to_string()))
            .await
            .is_ok_and(|r| r.host_id == Some(host_id))
    }

    /// Events a host sends to the controller.
    async fn host_event(&self, host_id: i64, name: &str, data: Value) {
        // An event about an instance is taken only from the host the instance is assigned to:
        // any host can register with the join token, and must not speak for others' games.
        let instance = match name {
            "instance_status" | "instance_log" => match data["id"].as_i64() {
                Some(id) => Some(id),
                None => {
                    tracing::warn!(
                        host_id,
                        event = name,
                        "event without an instance id; ignored"
                    );
                    return;
                }
            },
            _ => data["instance_id"].as_i64(),
        };
        let other = data["instance_id"]
            .as_i64()
            .filter(|o| Some(*o) != instance);
        for id in instance.into_iter().chain(other) {
            if self.assigned_to(id, host_id).await {
                continue;
            }
            tracing::warn!(
                host_id,
                instance_id = id,
                event = name,
                "event about an instance not assigned to this host; ignored"
            );
            return;
        }
        if matches!(name, "instance_log" | "instance_status") {
            self.external.observe(self, name, &data).await;
        }
        match name {
            "instance_status" => {
                let (Some(id), Some(status)) = (data["id"].as_i64(), data["status"].as_str())
                else {
                    tracing::warn!(host_id, "malformed instance_status event");
                    return;
                };
                let status = status.to_string();
                let port = data["game_port"].as_i64();
                let online: Vec<String> = data["players"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let result = self
                    .store
                    .write(move |c| {
                        let rec = store::instances::get(c, &id.to_string())?;
                        if rec.host_id != Some(host_id) {
                            return Err(store::StoreError::Invalid(format!(
                                "instance {id} is not assigned to host {host_id}"
                            )));
                        }
                        // A crash that will not be restarted ends the wish to run it.
                        if status == "crashed"
                            && rec.desired == "running"
                            && rec.config["restart_on_crash"].as_bool() != Some(true)
                        {
                            store::instances::set_desired(
                                c,
                                "system",
                                id,
                                "stopped",
                                "instance.crashed",
                            )?;
                        }
                        store::instances::set_status(c, id, &status, port)
                    })
                    .await;
                match result {
                    Ok(rec) => {
                        // Confirmed only once the status is committed: a view read in between
                        // would otherwise show the status from before as the host's word.
                        if let Ok(mut live) = self.live.lock() {
                            let entry = live.entry(id).or_default();
                            entry.confirmed = true;
                            entry.players = online.clone();
                            entry.message = data["message"].as_str().map(String::from);
                            entry.container =
                                Some(data["container"].clone()).filter(|c| !c.is_null());
                        }
                        self.observe_players(&rec, online).await;
                        if let Ok(view) = self.instance_view(rec).await {
                            self.hub.publish(Event::instance_updated(&view));
                        }
                    }
                    Err(e) => tracing::warn!(host_id, error = %e, "ignored instance_status"),
                }
            }
            "instance_log" => self.hub.publish(Event::instance_log(data)),
            "factorio_install_progress" | "factorio_versions" => {
                self.factorio_event(host_id, name, data).await
            }
            "host_info" => {
                self.host_addresses(host_id, &data).await;
                self.factorio.set(host_id, &data["factorio_versions"]);
                if let (Some(n), Ok(mut ports)) =
                    (data["game_ports"].as_u64(), self.host_ports.lock())
                {
                    ports.insert(host_id, n as usize);
                }
                if let (Some(name), Ok(mut backends)) =
                    (data["backend"].as_str(), self.host_backends.lock())
                {
                    backends.insert(
                        host_id,
                        json!({ "name": name, "error": data["backend_error"] }),
                    );
                }
                // The view now has the host's Factorio versions.
                self.publish_host_view(host_id).await;
            }
            "host_metrics" => self.metrics.census.sample(host_id, data),
            "ipc_error" => {
                let instance = data["instance_id"].as_i64().unwrap_or(-1).to_string();
                let kind = data["kind"].as_str().unwrap_or("unknown");
                self.metrics.ipc_error(&instance, kind);
            }
            "player_event" => {
                tracing::info!(
                    host_id,
                    instance_id = data["instance_id"].as_i64(),
                    kind = data["type"].as_str(),
                    player = data["name"].as_str(),
                    "player event"
                );
                self.game_player_event(&data).await;
                self.hub.publish(Event::player_event(data));
            }
            "plugin_lua.broadcast" => self.plugin_lua_broadcast(host_id, data).await,
            other if other.starts_with(crate::plugins::external::HOST_PREFIX) => {
                let instance = data["instance_id"].as_i64().unwrap_or(-1).to_string();
                if !self.external.host_event(self, other, data).await {
                    self.metrics.ipc_error(&instance, "unhandled");
                }
            }
            other => {
                if !self.plugin_event(host_id, other, data).await {
                    tracing::debug!(host_id, event = other, "unhandled host event");
                }
            }
        }
    }
}

/// What external plugins (`plugins::external`) use of the controller.
impl Controller {
    pub(crate) fn external_host_connected(&self, host_id: i64) -> bool {
        self.hub.host_connected(host_id)
    }

    /// Sends an event to a connected host; false when it is not connected.
    pub(crate) fn external_send_to_host(&self, host_id: i64, name: &str, data: Value) -> bool {
        if !self.hub.host_connected(host_id) {
            return false;
        }
        self.hub.send_to_host(host_id, name, data);
        true
    }
}
