//! Streaming parser for the Factorio server's stdout (research/factorio.md §3).
//!
//! Every line is first classified into one of the four shapes of §3.2 (dated game event → engine
//! line with level and source → engine line with seconds only → anything else), then the *message
//! text* is matched — never the `File.cpp:NNN` prefix, which changes between builds. Lines that
//! mean nothing to us are still returned as a [`LogLine`]; parsing never fails.

use std::fmt;

/// Engine log level (`Info`, `Warning`, …); unknown words are kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
    Verbose,
    Script,
    Other(String),
}

impl Level {
    fn parse(s: &str) -> Level {
        match s {
            "Info" => Level::Info,
            "Warning" => Level::Warning,
            "Error" => Level::Error,
            "Verbose" => Level::Verbose,
            "Script" => Level::Script,
            other => Level::Other(other.to_string()),
        }
    }
}

/// The shape of one output line (§3.2).
#[derive(Clone, Debug, PartialEq)]
pub enum LineKind {
    /// Shapes A/B: `%8.3f [Level File.cpp:NN: ]message`.
    Engine {
        secs: f64,
        level: Option<Level>,
        source: Option<String>,
        message: String,
    },
    /// Shape C: `YYYY-MM-DD HH:MM:SS [TAG] text` (chat, joins, …; stdout only).
    Event {
        time: String,
        tag: String,
        text: String,
    },
    /// Shape C′: `YYYY-MM-DD HH:MM:SS text` (e.g. Lua errors of console commands).
    Dated { time: String, text: String },
    /// Shape D: anything else (command output, `Done.`, continuation lines).
    Plain,
}

/// One line of server output, as received, with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub raw: String,
    pub kind: LineKind,
}

impl LogLine {
    /// The text after any timestamp/level/source prefix.
    pub fn message(&self) -> &str {
        match &self.kind {
            LineKind::Engine { message, .. } => message,
            LineKind::Event { text, .. } | LineKind::Dated { text, .. } => text,
            LineKind::Plain => &self.raw,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(
            &self.kind,
            LineKind::Engine {
                level: Some(Level::Error),
                ..
            }
        )
    }
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Which save a `SaveStarted`/`SaveFinished` pair belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveKind {
    /// `/server-save` (`Saving game as <path>`).
    Manual { path: String },
    /// `Saving to _autosaveN (blocking).`
    Autosave { name: String },
    /// The save ~1 s after the last player left (`Auto saving map as <path>`).
    EmptyServer { path: String },
    /// The save on `/quit` or a signal (`Saving map as <path>`, ends with `Saving progress: 100…%`).
    Quit { path: String },
}

/// Why the process exited, as the launcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitReport {
    /// Exit status, if it exited normally.
    pub code: Option<i32>,
    /// Terminating signal, if it was killed by one.
    pub signal: Option<i32>,
    /// The kernel killed it for going over its memory limit (Docker backend).
    pub oom_killed: bool,
    /// `Goodbye` was printed after the quit save completed: nothing was lost.
    pub graceful: bool,
    /// The launcher asked for the stop (`stop`/`kill`); otherwise the exit was unrequested.
    pub requested: bool,
    /// The last lines of output, for crash reports.
    pub last_lines: Vec<String>,
}

/// Typed events from a running server. The launcher's channel carries a [`ServerEvent::Line`] for
/// every output line, followed by the typed events parsed from it, and finally `Exited`.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerEvent {
    Line(LogLine),
    /// A message from the game's Lua on an IPC channel (`\f$ipc:` line; see [`super::ipc`]).
    Ipc {
        channel: String,
        data: serde_json::Value,
    },
    /// An `\f$ipc:` line that could not be used: counted and logged, never fatal.
    IpcError {
        kind: &'static str,
        message: String,
    },
    /// `changing state from(X) to(Y)` of the server's multiplayer state machine (§3.3).
    StateChanged {
        from: String,
        to: String,
    },
    /// UDP game socket is up: `Hosting game at IP ADDR:({0.0.0.0:34197})`.
    HostingGame {
        address: String,
    },
    /// `CreatingGame → InGame`: the map is loaded and the game runs.
    GameReady,
    /// `Starting RCON interface at IP ADDR:({0.0.0.0:27015})`: RCON accepts connections.
    RconReady {
        address: String,
    },
    PlayerJoined {
        name: String,
    },
    PlayerLeft {
        name: String,
    },
    Chat {
        name: String,
        message: String,
    },
    /// `Refusing connection for address (…), username (<name>). <Reason>` (`PasswordMissing`, …).
    ConnectionRefused {
        name: String,
        reason: String,
    },
    /// Any other dated `[TAG]` event (`KICK`, `BAN`, `UNBANNED`, `PROMOTE`, `DEMOTE`, `COMMAND`, …).
    GameEvent {
        tag: String,
        text: String,
    },
    SaveStarted {
        kind: SaveKind,
    },
    SaveFinished {
        kind: SaveKind,
    },
    /// An `Error`-level engine line (first line of a multi-line message).
    Error {
        message: String,
    },
    /// `CreatingGame → InitializationFailed`: bad save, bind failure, lock held, mod error …
    StartFailed {
        reason: String,
    },
    /// `Quitting: <reason>.` (`remote-quit`, `signal`, `multiplayer error`).
    Quitting {
        reason: String,
    },
    /// `Quitting: multiplayer error.` — the game failed while running (Lua/mod error).
    Crashed {
        message: String,
    },
    /// `Goodbye`: the process is about to exit.
    Goodbye,
    /// The process exited (launcher only, always the last event).
    Exited(ExitReport),
}

/// `YYYY-MM-DD HH:MM:SS` at the start of `s`?
fn dated_prefix(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let ok = digits.iter().all(|&i| b[i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' ';
    ok.then(|| (&s[..19], &s[20..]))
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Source of shape A: `\w+\.cpp:\d+` or `[@=].*?:\d+`, followed by `: `. Returns (source, message).
fn split_source(rest: &str) -> Option<(&str, &str)> {
    if rest.starts_with('@') || rest.starts_with('=') {
        // Lua source: shortest prefix ending in `:<digits>` that is followed by `: `.
        let mut from = 0;
        while let Some(i) = rest[from..].find(": ") {
            let end = from + i;
            let src = &rest[..end];
            if let Some((_, n)) = src.rsplit_once(':')
                && !n.is_empty()
                && n.bytes().all(|c| c.is_ascii_digit())
            {
                return Some((src, &rest[end + 2..]));
            }
            from = end + 2;
        }
        return None;
    }
    let end = rest.find(": ")?;
    let src = &rest[..end];
    let (file, line) = src.rsplit_once(':')?;
    let stem = file.strip_suffix(".cpp")?;
    (is_word(stem) && !line.is_empty() && line.bytes().all(|c| c.is_ascii_digit()))
        .then(|| (src, &rest[end + 2..]))
}

/// Classify one line into its shape (§3.2: C, then A, then B, else D).
pub fn parse_line(raw: &str) -> LogLine {
    let raw = raw.trim_end_matches(['\r', '\n']);
    let kind = classify(raw);
    LogLine {
        raw: raw.to_string(),
        kind,
    }
}

fn classify(raw: &str) -> LineKind {
    if let Some((time, rest)) = dated_prefix(raw) {
        if let Some(tail) = rest.strip_prefix('[')
            && let Some((tag, text)) = tail.split_once("] ")
            && is_word(tag)
        {
            return LineKind::Event {
                time: time.into(),
                tag: tag.into(),
                text: text.into(),
            };
        }
        return LineKind::Dated {
            time: time.into(),
            text: rest.into(),
        };
    }
    let trimmed = raw.trim_start_matches(' ');
    let Some((num, rest)) = trimmed.split_once(' ') else {
        return LineKind::Plain;
    };
    let Some((int, frac)) = num.split_once('.') else {
        return LineKind::Plain;
    };
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !numeric(int) || !numeric(frac) {
        return LineKind::Plain;
    }
    let secs = num.parse::<f64>().unwrap_or(0.0);
    if let Some((level, after)) = rest.split_once(' ')
        && is_word(level)
        && let Some((source, message)) = split_source(after)
    {
        return LineKind::Engine {
            secs,
            level: Some(Level::parse(level)),
            source: Some(source.into()),
            message: message.into(),
        };
    }
    LineKind::Engine {
        secs,
        level: None,
        source: None,
        message: rest.into(),
    }
}

/// Text between `open` and the next `close` after it.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

/// `IP ADDR:({0.0.0.0:34197})` → `0.0.0.0:34197`.
fn ip_addr(s: &str) -> Option<String> {
    between(s, "IP ADDR:({", "})").map(String::from)
}

/// Turns lines into events; keeps the little state multi-line errors and save pairs need.
#[derive(Default, Debug)]
pub struct LineParser {
    /// Last error message, with continuation lines of a multi-line error appended.
    last_error: Option<String>,
    /// The previous line was an error whose message may continue on bare lines.
    in_error: bool,
    /// The save in progress, so `Saving finished` can say which one finished.
    saving: Option<SaveKind>,
}

impl LineParser {
    pub fn new() -> LineParser {
        LineParser::default()
    }

    /// Parse one line: its shape, and the typed events it means (empty for unknown lines).
    pub fn feed(&mut self, raw: &str) -> (LogLine, Vec<ServerEvent>) {
        let line = parse_line(raw);
        let mut ev = Vec::new();
        match &line.kind {
            LineKind::Event { tag, text, .. } => {
                self.in_error = false;
                ev.push(game_event(tag, text));
            }
            LineKind::Dated { .. } => self.in_error = false,
            LineKind::Plain => {
                if self.in_error
                    && let Some(e) = self.last_error.as_mut()
                {
                    e.push('\n');
                    e.push_str(&line.raw);
                }
                if line.raw.starts_with("Can't save to default location") {
                    // A scenario-started server has no default save: the save is over (CLIO does the same).
                    if let Some(kind) = self.saving.take() {
                        ev.push(ServerEvent::SaveFinished { kind });
                    }
                    ev.push(ServerEvent::Error {
                        message: line.raw.clone(),
                    });
                }
            }
            LineKind::Engine { level, message, .. } => {
                self.in_error = false;
                if *level == Some(Level::Error) {
                    self.last_error = Some(message.clone());
                    self.in_error = true;
                    ev.push(ServerEvent::Error {
                        message: message.clone(),
                    });
                }
                self.engine(message, &mut ev);
            }
        }
        (line, ev)
    }

    /// The most recent error message (multi-line errors joined), for crash/start-failure reports.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn failure_reason(&self) -> String {
        let e = self.last_error.clone().unwrap_or_default();
        // `MultiplayerManager failed: "File /x does not exist."` → `File /x does not exist.`
        match e.strip_prefix("MultiplayerManager failed: ") {
            Some(r) => r.trim().trim_matches('"').to_string(),
            None => e,
        }
    }

    fn engine(&mut self, m: &str, ev: &mut Vec<ServerEvent>) {
        if let Some(pos) = m.find("changing state from(") {
            let tail = &m[pos..];
            if let (Some(from), Some(to)) =
                (between(tail, "from(", ")"), between(tail, " to(", ")"))
            {
                ev.push(ServerEvent::StateChanged {
                    from: from.into(),
                    to: to.into(),
                });
                if from == "CreatingGame" && to == "InGame" {
                    ev.push(ServerEvent::GameReady);
                }
                if to == "InitializationFailed" {
                    ev.push(ServerEvent::StartFailed {
                        reason: self.failure_reason(),
                    });
                }
            }
        } else if m.starts_with("Hosting game at ") {
            if let Some(a) = ip_addr(m) {
                ev.push(ServerEvent::HostingGame { address: a });
            }
        } else if m.starts_with("Starting RCON interface at ") {
            if let Some(a) = ip_addr(m) {
                ev.push(ServerEvent::RconReady { address: a });
            }
        } else if let Some(p) = m.strip_prefix("Auto saving map as ") {
            let kind = SaveKind::EmptyServer { path: p.into() };
            self.saving = Some(kind.clone());
            ev.push(ServerEvent::SaveStarted { kind });
        } else if let Some(p) = m.strip_prefix("Saving game as ") {
            // Part of an empty-server save already announced by `Auto saving map as`.
            if !matches!(self.saving, Some(SaveKind::EmptyServer { .. })) {
                let kind = SaveKind::Manual { path: p.into() };
                self.saving = Some(kind.clone());
                ev.push(ServerEvent::SaveStarted { kind });
            }
        } else if let Some(rest) = m.strip_prefix("Saving to ") {
            let name = rest.split(" (").next().unwrap_or(rest).to_string();
            let kind = SaveKind::Autosave { name };
            self.saving = Some(kind.clone());
            ev.push(ServerEvent::SaveStarted { kind });
        } else if let Some(p) = m.strip_prefix("Saving map as ") {
            let kind = SaveKind::Quit { path: p.into() };
            self.saving = Some(kind.clone());
            ev.push(ServerEvent::SaveStarted { kind });
        } else if m == "Saving finished" {
            let kind = self.saving.take().unwrap_or(SaveKind::Manual {
                path: String::new(),
            });
            ev.push(ServerEvent::SaveFinished { kind });
        } else if m.starts_with("Saving progress: 100") {
            if let Some(kind) = self.saving.take() {
                ev.push(ServerEvent::SaveFinished { kind });
            }
        } else if let Some(r) = m.strip_prefix("Quitting: ") {
            let reason = r.trim_end_matches('.').to_string();
            let crashed = reason == "multiplayer error";
            ev.push(ServerEvent::Quitting { reason });
            if crashed {
                ev.push(ServerEvent::Crashed {
                    message: self.failure_reason(),
                });
            }
        } else if m.starts_with("Refusing connection for address ") {
            if let Some(at) = m.rfind("username (")
                && let Some((name, reason)) = m[at + "username (".len()..].split_once("). ")
            {
                ev.push(ServerEvent::ConnectionRefused {
                    name: name.into(),
                    reason: reason.trim().into(),
                });
            }
        } else if m == "Goodbye" {
            ev.push(ServerEvent::Goodbye);
        }
    }
}

fn game_event(tag: &str, text: &str) -> ServerEvent {
    // Player names contain no spaces (CLIO takes the first whitespace-free token).
    let name = || text.split(' ').next().unwrap_or("").to_string();
    match tag {
        "JOIN" => ServerEvent::PlayerJoined { name: name() },
        "LEAVE" => ServerEvent::PlayerLeft { name: name() },
        "CHAT" => match text.split_once(": ") {
            Some((n, msg)) => ServerEvent::Chat {
                name: n.into(),
                message: msg.into(),
            },
            None => ServerEvent::GameEvent {
                tag: tag.into(),
                text: text.into(),
            },
        },
        _ => ServerEvent::GameEvent {
            tag: tag.into(),
            text: text.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_clio_order() {
        let a = parse_line(
            "   0.578 Info ServerMultiplayerManager.cpp:808: updateTick(926) changing state from(CreatingGame) to(InGame)",
        );
        assert!(
            matches!(&a.kind, LineKind::Engine { level: Some(Level::Info), source: Some(s), .. } if s == "ServerMultiplayerManager.cpp:808")
        );
        let lua = parse_line(" 344.683 Script =(command):1: test");
        assert!(
            matches!(&lua.kind, LineKind::Engine { source: Some(s), message, .. } if s == "=(command):1" && message == "test")
        );
        let lua2 = parse_line(
            "   1.029 Script @__maraxsis__/lib/events.lua:52: Finalized 67 events for maraxsis",
        );
        assert!(
            matches!(&lua2.kind, LineKind::Engine { source: Some(s), .. } if s == "@__maraxsis__/lib/events.lua:52")
        );
        let b = parse_line("   1.032 Hosting game at IP ADDR:({0.0.0.0:34100})");
        assert!(
            matches!(&b.kind, LineKind::Engine { level: None, message, .. } if message == "Hosting game at IP ADDR:({0.0.0.0:34100})")
        );
        let b2 = parse_line("24915.225 Quitting: multiplayer error.");
        assert!(matches!(&b2.kind, LineKind::Engine { level: None, .. }));
        let c = parse_line("2019-01-20 10:30:04 [JOIN] User joined the game");
        assert!(matches!(&c.kind, LineKind::Event { tag, .. } if tag == "JOIN"));
        let c2 = parse_line(
            "2019-01-20 10:30:14 Cannot execute command. Error: [string \"blah\"]:1: syntax error near <eof>",
        );
        assert!(matches!(&c2.kind, LineKind::Dated { .. }));
        for d in [
            "Done.",
            "Players (0):",
            "2.0.77",
            "7 seconds",
            "",
            "Error while running event level::on_nth_tick(1)",
        ] {
            assert_eq!(parse_line(d).kind, LineKind::Plain, "{d:?}");
        }
    }

    #[test]
    fn loading_mod_lines_are_not_level_lines() {
        let l = parse_line("   0.025 Loading mod base 2.0.77 (data.lua)");
        assert!(matches!(&l.kind, LineKind::Engine { level: None, .. }));
    }

    #[test]
    fn chat_names_and_server_chat() {
        let mut p = LineParser::new();
        let (_, ev) = p.feed("2024-04-09 06:08:51 [CHAT] <server>: sup: yes");
        assert_eq!(
            ev,
            vec![ServerEvent::Chat {
                name: "<server>".into(),
                message: "sup: yes".into()
            }]
        );
    }
}
