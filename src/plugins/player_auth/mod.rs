//! `player_auth`: log in to the web UI by proving, in a game of the cluster, that you are the
//! Factorio player of the same name (research/plugins.md §2.4, written afresh).
//!
//! Two flows; both end with a code typed into a game with `/web-login CODE`:
//! - **web first**: the login page asks for a code (`POST /api/v1/player_auth/start`), shows it,
//!   and polls; the player types `/web-login CODE` in any game of the cluster.
//! - **game first** (Clusterio's): the player types `/web-login`; the game shows a *player code*;
//!   the player enters it on the login page (`POST /api/v1/player_auth/player_code`), which
//!   answers with a *verify code* only that player can confirm in game with `/web-login CODE`.
//!
//! The browser then polls (`POST /api/v1/player_auth/poll`) and receives an ordinary login token
//! for the clustorio user of the player's name (created with the default role when it does not
//! exist yet; a banned user is refused). Codes live in memory, expire after
//! `player_auth.code_timeout` seconds and work once. The unauthenticated routes and the in-game
//! command are rate-limited (`player_auth.attempts_per_minute` per client address and per
//! player). Each login writes audit rows (`token.issue`, `player_auth.login`).
//!
//! Link messages: `player_auth.fetch_code` `{instance_id, player}` → `{player_code, web_url,
//! expires_in_s}` and `player_auth.submit_code` `{instance_id, player, code}` → `{user}`, both
//! host → controller requests. IPC channel `player_auth` (game → host): `{type: "open_dialog" |
//! "code", player, code?}`; host → game: `/web-login open|done|error PLAYER …` over RCON.

use super::{Builtin, ControllerPlugin, HostPlugin, LuaModule, PluginInfo};
use crate::config::schema::{Default as D, Field, Kind};
use crate::controller::error::ApiError;
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::plugins::{HostCtx, InstanceCtx};
use crate::link::frame::ErrorBody;
use crate::store::{self, StoreError};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static LUA: LuaModule = LuaModule {
    name: "player_auth",
    version: "0.1.0",
    dependencies: &[("clusterio", "*")],
    load: &["auth.lua"],
    require: &[],
    files: &[("auth.lua", include_str!("auth.lua"))],
};

const CODE_LENGTH: &str = "player_auth.code_length";
const CODE_TIMEOUT: &str = "player_auth.code_timeout";
const ATTEMPTS: &str = "player_auth.attempts_per_minute";
const WEB_URL: &str = "player_auth.web_url";
const SHOW_ADDRESS: &str = "player_auth.show_connect_address";

static INFO: PluginInfo = PluginInfo {
    name: "player_auth",
    title: "Player auth",
    description: "Log in to the web UI by typing a code into a game of the cluster.",
    version: "0.1.0",
    permissions: &[],
    lua: Some(&LUA),
    ipc_channels: &["player_auth"],
    migrations: &[],
    settings: crate::config::PluginSettings {
        instance: &[super::load_plugin_field(
            "player_auth.load_plugin",
            "Player auth",
        )],
        controller: &[
            Field::new(CODE_LENGTH, Kind::Integer { min: 4, max: 16 }, D::Int(6))
                .title("Login code length")
                .about("Characters in each code players type (from 51 unambiguous letters and digits).")
                .section("Player auth"),
            Field::new(CODE_TIMEOUT, Kind::Integer { min: 5, max: 3600 }, D::Int(120))
                .title("Login code lifetime")
                .about("Seconds a login code stays valid.")
                .section("Player auth"),
            Field::new(ATTEMPTS, Kind::Integer { min: 1, max: 10_000 }, D::Int(10))
                .title("Login attempts per minute")
                .about("Codes one client address may ask for or try, and codes one player may type, per minute.")
                .section("Player auth"),
            Field::new(WEB_URL, Kind::Text { max_len: 255, rule: None }, D::Str(""))
                .title("Web UI address shown in game")
                .about("The address players are told to open; empty: the controller URL of the host the game runs on.")
                .section("Player auth"),
            Field::new(SHOW_ADDRESS, Kind::Bool, D::Bool(false))
                .title("Show server addresses before login")
                .about("List each running game's connect address on the login page (to users not logged in).")
                .section("Player auth"),
        ],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(AuthController::default())),
    host: || Some(Box::new(AuthHost)),
};

/// Letters and digits a player cannot mistake for one another (no 0/O, 1/l/I, 2/Z, …).
pub const ALPHABET: &[u8] = b"abcdefghkmnpqrstuvwxyzABCDEFGHJKLMNPRSTUVWXY3456789";
/// Logins in progress at once, over all clients; more are refused until some expire.
const MAX_PENDING: usize = 10_000;
/// Polls allowed per address per minute, as a multiple of the attempts.
const POLLS_PER_ATTEMPT: u32 = 12;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn new_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A Factorio player name as the game allows it (and as it can travel in a console command).
pub fn valid_player(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 60
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A browser waiting for its code to be typed in game.
struct Login {
    poll_token: String,
    /// Game first: only this player may confirm it.
    player: Option<String>,
    expires: Instant,
    done: Option<Done>,
}

struct Done {
    user: String,
    token: String,
}

/// A code a game showed its player, to enter on the login page.
struct PlayerCode {
    player: String,
    expires: Instant,
}

/// Fixed one-minute windows per key (a client address, a player).
#[derive(Default)]
struct Limiter {
    windows: HashMap<String, (Instant, u32)>,
}

impl Limiter {
    fn allow(&mut self, key: &str, per_minute: u32, now: Instant) -> bool {
        if self.windows.len() > MAX_PENDING {
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        }
        let e = self.windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= per_minute
    }
}

#[derive(Default)]
struct State {
    /// Code typed in game → the browser waiting for it.
    logins: HashMap<String, Login>,
    player_codes: HashMap<String, PlayerCode>,
    limiter: Limiter,
    logged_in: u64,
    refused: u64,
}

impl State {
    fn purge(&mut self, now: Instant) {
        self.logins
            .retain(|_, l| l.expires > now || l.done.is_some() && l.expires + grace() > now);
        self.player_codes.retain(|_, p| p.expires > now);
    }

    fn fresh_code(&self, len: usize) -> String {
        loop {
            let code = new_code(len);
            if !self.logins.contains_key(&code) && !self.player_codes.contains_key(&code) {
                return code;
            }
        }
    }
}

/// How long a finished login waits for its browser's next poll.
fn grace() -> Duration {
    Duration::from_secs(60)
}

#[derive(Default)]
struct AuthController {
    state: Mutex<State>,
}

struct Limits {
    len: usize,
    timeout: Duration,
    attempts: u32,
}

fn limits(ctx: &ControllerCtx) -> Limits {
    let int = |name, fallback: i64| ctx.setting(name).as_i64().unwrap_or(fallback);
    Limits {
        len: usize::try_from(int(CODE_LENGTH, 6)).unwrap_or(6),
        timeout: Duration::from_secs(u64::try_from(int(CODE_TIMEOUT, 120)).unwrap_or(120)),
        attempts: u32::try_from(int(ATTEMPTS, 10)).unwrap_or(10),
    }
}

fn too_many() -> ApiError {
    ApiError::new(
        429,
        "rate_limited",
        "too many login attempts from this address; wait a minute and try again",
    )
}

fn expired() -> ApiError {
    ApiError::new(
        410,
        "expired",
        "this login code has expired or was already used; start again",
    )
}

impl AuthController {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a browser login waiting for `code`; returns what the browser needs.
    fn open_login(&self, st: &mut State, l: &Limits, player: Option<String>) -> Value {
        let code = st.fresh_code(l.len);
        let poll_token = crate::store::tokens::generate("pap");
        st.logins.insert(
            code.clone(),
            Login {
                poll_token: poll_token.clone(),
                player: player.clone(),
                expires: Instant::now() + l.timeout,
                done: None,
            },
        );
        json!({
            "code": code,
            "poll_token": poll_token,
            "player": player,
            "expires_in_s": l.timeout.as_secs(),
            "command": format!("/web-login {code}"),
        })
    }

    /// A code typed in game by `player` on instance `instance_id`.
    async fn submit(
        &self,
        ctx: &ControllerCtx,
        instance_id: i64,
        player: &str,
        code: &str,
    ) -> Result<Value, ErrorBody> {
        let l = limits(ctx);
        {
            let mut st = self.lock();
            let now = Instant::now();
            if !st.limiter.allow(
                &format!("player:{}", player.to_lowercase()),
                l.attempts,
                now,
            ) {
                st.refused += 1;
                return Err(ErrorBody::new(
                    "rate_limited",
                    "too many codes typed; wait a minute",
                ));
            }
            match st.logins.get(code) {
                Some(login) if login.done.is_none() && login.expires > now => {
                    if login
                        .player
                        .as_deref()
                        .is_some_and(|p| !p.eq_ignore_ascii_case(player))
                    {
                        st.refused += 1;
                        return Err(ErrorBody::new(
                            "wrong_code",
                            "that code is not right (check it on the web page)",
                        ));
                    }
                }
                Some(login) if login.done.is_none() => {
                    st.refused += 1;
                    return Err(ErrorBody::new(
                        "expired",
                        "that code has expired; start again on the web page",
                    ));
                }
                _ => {
                    st.refused += 1;
                    return Err(ErrorBody::new(
                        "wrong_code",
                        "that code is not right (check it on the web page)",
                    ));
                }
            }
        }
        let instance = ctx
            .instance_name(instance_id)
            .await
            .unwrap_or_else(|| format!("instance {instance_id}"));
        let (name, inst, flow) = (
            player.to_string(),
            instance.clone(),
            if self
                .lock()
                .logins
                .get(code)
                .is_some_and(|l| l.player.is_some())
            {
                "game_first"
            } else {
                "web_first"
            },
        );
        let issued = ctx
            .store()
            .write(move |c| {
                let user = match store::users::find(c, &name)? {
                    Some(u) => u,
                    None => store::users::create(
                        c,
                        "player_auth",
                        &name,
                        &store::users::UserChange::default(),
                    )?,
                };
                if user.is_banned {
                    return Err(StoreError::Invalid(format!(
                        "{} is banned from this cluster",
                        user.name
                    )));
                }
                let actor = format!("player_auth:{inst}");
                let (token_id, secret) = store::tokens::issue(c, &actor, &user.name)?;
                store::audit::record(
                    c,
                    &actor,
                    "player_auth.login",
                    &user.name,
                    &json!({ "instance": inst, "flow": flow, "token_id": token_id }),
                )?;
                Ok((user.name, secret))
            })
            .await;
        let (user, token) = match issued {
            Ok(v) => v,
            Err(e) => {
                self.lock().refused += 1;
                return Err(ErrorBody::new("refused", e.to_string()));
            }
        };
        let mut st = self.lock();
        match st.logins.get_mut(code) {
            Some(login) if login.done.is_none() => {
                login.done = Some(Done {
                    user: user.clone(),
                    token,
                });
                login.expires = Instant::now();
                st.logged_in += 1;
                tracing::info!(plugin = "player_auth", user = %user, instance = %instance, "logged in from the game");
                Ok(json!({ "user": user }))
            }
            // Confirmed twice at once: the first one won; this token was never handed out.
            _ => Err(ErrorBody::new("expired", "that code was already used")),
        }
    }

    fn fetch_code(&self, ctx: &ControllerCtx, player: &str) -> Result<Value, ErrorBody> {
        let l = limits(ctx);
        let mut st = self.lock();
        let now = Instant::now();
        st.purge(now);
        if !st.limiter.allow(
            &format!("player:{}", player.to_lowercase()),
            l.attempts,
            now,
        ) {
            return Err(ErrorBody::new(
                "rate_limited",
                "too many codes asked for; wait a minute",
            ));
        }
        if st.player_codes.len() >= MAX_PENDING {
            return Err(ErrorBody::new(
                "busy",
                "too many logins in progress; try again later",
            ));
        }
        let code = st.fresh_code(l.len);
        st.player_codes.insert(
            code.clone(),
            PlayerCode {
                player: player.to_string(),
                expires: now + l.timeout,
            },
        );
        Ok(json!({
            "player_code": code,
            "web_url": ctx.setting(WEB_URL).as_str().unwrap_or(""),
            "expires_in_s": l.timeout.as_secs(),
        }))
    }

    async fn servers(&self, ctx: &ControllerCtx) -> Value {
        let show = ctx.setting(SHOW_ADDRESS).as_bool() == Some(true);
        let mut out = Vec::new();
        for (id, name, host) in ctx.running_instances().await {
            let mut s = json!({ "instance_id": id, "name": name });
            if show && let Some(address) = ctx.game_address(id, host).await {
                s["address"] = json!(address);
            }
            out.push(s);
        }
        json!(out)
    }
}

fn field<'a>(data: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    data[name]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("\"{name}\" is missing")))
}

impl ControllerPlugin for AuthController {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn host_event<'a>(
        &'a self,
        _ctx: &'a ControllerCtx,
        _host_id: i64,
        name: &'a str,
        _data: Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            tracing::debug!(plugin = "player_auth", event = name, "unknown event");
        })
    }

    fn host_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        _host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ErrorBody>> {
        Box::pin(async move {
            let player = data["player"].as_str().unwrap_or("");
            if !valid_player(player) {
                return Err(ErrorBody::new(
                    "invalid",
                    format!("\"{player}\" is not a player name"),
                ));
            }
            match name {
                "player_auth.fetch_code" => self.fetch_code(ctx, player),
                "player_auth.submit_code" => {
                    let (Some(instance_id), Some(code)) =
                        (data["instance_id"].as_i64(), data["code"].as_str())
                    else {
                        return Err(ErrorBody::new(
                            "invalid",
                            "submit_code needs instance_id and code",
                        ));
                    };
                    self.submit(ctx, instance_id, player, code.trim()).await
                }
                other => Err(ErrorBody::new(
                    "unknown_request",
                    format!("player_auth has no request \"{other}\""),
                )),
            }
        })
    }

    fn public_request<'a>(
        &'a self,
        ctx: &'a ControllerCtx,
        peer: Option<IpAddr>,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, Result<Value, ApiError>> {
        Box::pin(async move {
            let l = limits(ctx);
            let client = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            match name {
                "player_auth.servers" => Ok(self.servers(ctx).await),
                "player_auth.start" => {
                    let mut st = self.lock();
                    let now = Instant::now();
                    st.purge(now);
                    if !st.limiter.allow(&format!("ip:{client}"), l.attempts, now) {
                        st.refused += 1;
                        return Err(too_many());
                    }
                    if st.logins.len() >= MAX_PENDING {
                        return Err(ApiError::new(
                            503,
                            "busy",
                            "too many logins in progress; try again later",
                        ));
                    }
                    Ok(self.open_login(&mut st, &l, None))
                }
                "player_auth.player_code" => {
                    let code = field(&data, "player_code")?;
                    let mut st = self.lock();
                    let now = Instant::now();
                    st.purge(now);
                    if !st.limiter.allow(&format!("ip:{client}"), l.attempts, now) {
                        st.refused += 1;
                        return Err(too_many());
                    }
                    let Some(pc) = st.player_codes.remove(code) else {
                        st.refused += 1;
                        return Err(ApiError::new(
                            404,
                            "wrong_code",
                            "that code is not right or has expired; type /web-login in the game for a new one",
                        ));
                    };
                    if st.logins.len() >= MAX_PENDING {
                        return Err(ApiError::new(
                            503,
                            "busy",
                            "too many logins in progress; try again later",
                        ));
                    }
                    Ok(self.open_login(&mut st, &l, Some(pc.player)))
                }
                "player_auth.poll" => {
                    let code = field(&data, "code")?;
                    let poll = field(&data, "poll_token")?;
                    let mut st = self.lock();
                    let now = Instant::now();
                    if !st.limiter.allow(
                        &format!("poll:{client}"),
                        l.attempts.saturating_mul(POLLS_PER_ATTEMPT),
                        now,
                    ) {
                        return Err(too_many());
                    }
                    st.purge(now);
                    let Some(login) = st.logins.get(code) else {
                        return Err(expired());
                    };
                    let same: bool =
                        subtle::ConstantTimeEq::ct_eq(login.poll_token.as_bytes(), poll.as_bytes())
                            .into();
                    if !same {
                        return Err(expired());
                    }
                    if login.done.is_none() {
                        let left = login.expires.saturating_duration_since(now).as_secs();
                        return Ok(json!({ "verified": false, "expires_in_s": left }));
                    }
                    let Some(Login {
                        done: Some(done), ..
                    }) = st.logins.remove(code)
                    else {
                        return Err(expired());
                    };
                    Ok(json!({ "verified": true, "user": done.user, "token": done.token }))
                }
                other => Err(ApiError::not_found(format!(
                    "player_auth has no public request \"{other}\""
                ))),
            }
        })
    }

    fn status<'a>(&'a self, _ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let st = self.lock();
            json!({
                "pending": st.logins.values().filter(|l| l.done.is_none()).count(),
                "logged_in": st.logged_in,
                "refused": st.refused,
            })
        })
    }
}

struct AuthHost;

impl AuthHost {
    /// `/web-login error PLAYER message` (one line, no control characters).
    fn error(inst: &InstanceCtx, player: &str, message: &str) {
        let clean: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        inst.rcon(format!("/web-login error {player} {clean}"));
    }
}

/// What the controller's part said, without the `plugin_error: <code>: ` wrapping it travels in.
fn reason(e: &ErrorBody) -> &str {
    let mut m = e.message.as_str();
    for _ in 0..2 {
        match m.split_once(": ") {
            Some((code, rest))
                if !code.is_empty()
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                m = rest
            }
            _ => break,
        }
    }
    m
}

async fn open_dialog(inst: InstanceCtx, player: String) {
    match inst
        .request(
            "player_auth.fetch_code",
            json!({ "player": player }),
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(reply) => {
            let code = reply["player_code"].as_str().unwrap_or("");
            let configured = reply["web_url"].as_str().unwrap_or("").trim().to_string();
            let url = if configured.is_empty() {
                inst.controller_url()
            } else {
                configured
            };
            let url: String = url.chars().filter(|c| !c.is_whitespace()).collect();
            let seconds = reply["expires_in_s"].as_u64().unwrap_or(0);
            if code.is_empty() || !code.bytes().all(|b| ALPHABET.contains(&b)) {
                AuthHost::error(&inst, &player, "the controller sent no code");
                return;
            }
            inst.rcon(format!("/web-login open {player} {url} {code} {seconds}"));
        }
        Err(e) if matches!(e.code.as_str(), "timeout" | "session_lost" | "overflow") => {
            AuthHost::error(
                &inst,
                &player,
                "login is temporarily unavailable (the controller is not reachable)",
            )
        }
        Err(e) => AuthHost::error(&inst, &player, reason(&e)),
    }
}

async fn submit_code(inst: InstanceCtx, player: String, code: String) {
    match inst
        .request(
            "player_auth.submit_code",
            json!({ "player": player, "code": code }),
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(reply) => {
            let user = reply["user"].as_str().unwrap_or(&player).to_string();
            let user = if valid_player(&user) {
                user
            } else {
                player.clone()
            };
            inst.rcon(format!("/web-login done {player} {user}"));
        }
        Err(e) if matches!(e.code.as_str(), "timeout" | "session_lost" | "overflow") => {
            AuthHost::error(
                &inst,
                &player,
                "login is temporarily unavailable (the controller is not reachable)",
            )
        }
        Err(e) => AuthHost::error(&inst, &player, reason(&e)),
    }
}

impl HostPlugin for AuthHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, data: Value) {
        if channel != "player_auth" {
            tracing::debug!(plugin = "player_auth", instance = %inst.name, channel, "unexpected IPC channel");
            return;
        }
        let Some(player) = data["player"].as_str().filter(|p| valid_player(p)) else {
            tracing::warn!(plugin = "player_auth", instance = %inst.name, "IPC message without a valid player");
            return;
        };
        let player = player.to_string();
        match data["type"].as_str() {
            Some("open_dialog") => {
                tokio::spawn(open_dialog(inst.clone(), player));
            }
            Some("code") => {
                let code = data["code"].as_str().unwrap_or("").trim();
                if code.is_empty() || code.len() > 64 {
                    AuthHost::error(inst, &player, "type the code the web page shows");
                    return;
                }
                tokio::spawn(submit_code(inst.clone(), player, code.to_string()));
            }
            other => {
                tracing::warn!(plugin = "player_auth", instance = %inst.name, kind = ?other, "unknown player_auth message")
            }
        }
    }

    fn controller_event(&self, _host: &HostCtx, name: &str, _data: Value) {
        tracing::debug!(plugin = "player_auth", event = name, "unknown event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_only_the_unambiguous_alphabet() {
        assert_eq!(ALPHABET.len(), 51);
        for _ in 0..100 {
            let c = new_code(8);
            assert_eq!(c.len(), 8);
            assert!(c.bytes().all(|b| ALPHABET.contains(&b)), "{c}");
        }
        for bad in ["0", "O", "1", "l", "I"] {
            assert!(!ALPHABET.contains(&bad.as_bytes()[0]), "{bad}");
        }
    }

    #[test]
    fn player_names_that_can_travel_in_a_command() {
        assert!(valid_player("Alice_1.x-y"));
        for bad in ["", "a b", "a;b", "x\ny", &"a".repeat(61)] {
            assert!(!valid_player(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_limiter_counts_per_key_per_minute() {
        let mut l = Limiter::default();
        let t = Instant::now();
        assert!(l.allow("a", 2, t));
        assert!(l.allow("a", 2, t));
        assert!(!l.allow("a", 2, t));
        assert!(l.allow("b", 2, t));
        assert!(l.allow("a", 2, t + Duration::from_secs(61)));
    }
}
