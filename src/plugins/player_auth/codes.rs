//! The controller's login codes for player_auth (research/plugins.md §2.4), kept in memory.
//!
//! Two flows end the same way: a code typed into a game (`/web-login <code>`) by the player who
//! owns the account proves the browser that holds the code's secret.
//! - Web first: the browser asks for a code ([`Codes::web_start`]) and shows it; any player who
//!   types it in game ([`Codes::claim`]) logs that browser in as themselves.
//! - Game first: `/web-login` shows the player a *player code* ([`Codes::game_start`]); typed
//!   into the web page ([`Codes::enter_player_code`]) it gives the browser a *verify code* that
//!   only that player may type in game.
//!
//! Codes use an alphabet without look-alikes, expire, and are used once; the browser polls
//! [`Codes::poll`] with its secret until the player has typed the code.

use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Letters and digits that cannot be mistaken for one another (no 0/O, 1/l/I, 2/Z, …).
pub const ALPHABET: &[u8] = b"abcdefghkmnpqrstuvwxyzABCDEFGHJKLMNPRSTUVWXY3456789";

/// A fresh code of `len` characters from [`ALPHABET`].
pub fn new_code(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The player has not typed the code yet.
    Pending,
    /// Typed in game by this player; the entry is gone (a second poll gets `Unknown`).
    Verified(String),
    /// No such code, the secret does not match, or it expired.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Accepted,
    /// Not a code we handed out, already used, or expired.
    Unknown,
    /// A verify code for another player.
    WrongPlayer,
}

struct Entry {
    secret: String,
    /// Game first: only this player may type it. Web first: whoever typed it.
    player: Option<String>,
    verified: bool,
    expires: Instant,
}

pub struct Codes {
    pub length: usize,
    pub ttl: Duration,
    /// Code to type in game → the browser waiting for it.
    typed: HashMap<String, Entry>,
    /// Player code (shown in game) → (player, expiry).
    player_codes: HashMap<String, (String, Instant)>,
}

impl Codes {
    pub fn new(length: usize, ttl: Duration) -> Codes {
        Codes {
            length: length.clamp(4, 32),
            ttl,
            typed: HashMap::new(),
            player_codes: HashMap::new(),
        }
    }

    fn unused_code(&self) -> String {
        loop {
            let c = new_code(self.length);
            if !self.typed.contains_key(&c) && !self.player_codes.contains_key(&c) {
                return c;
            }
        }
    }

    /// Drops what has expired.
    pub fn purge(&mut self, now: Instant) {
        self.typed.retain(|_, e| e.expires > now);
        self.player_codes.retain(|_, (_, exp)| *exp > now);
    }

    /// Web first: a code for the browser to show, and the secret it polls with.
    pub fn web_start(&mut self, now: Instant) -> (String, String) {
        self.purge(now);
        let code = self.unused_code();
        let secret = crate::store::tokens::generate("pa");
        self.typed.insert(
            code.clone(),
            Entry {
                secret: secret.clone(),
                player: None,
                verified: false,
                expires: now + self.ttl,
            },
        );
        (code, secret)
    }

    /// Game first: a player code to show `player` in game.
    pub fn game_start(&mut self, player: &str, now: Instant) -> String {
        self.purge(now);
        self.player_codes.retain(|_, (p, _)| p != player);
        let code = self.unused_code();
        self.player_codes
            .insert(code.clone(), (player.to_string(), now + self.ttl));
        code
    }

    /// Game first, in the browser: the player code → a verify code for that player to type in
    /// game, and the secret to poll with. The player code is used up.
    pub fn enter_player_code(
        &mut self,
        player_code: &str,
        now: Instant,
    ) -> Option<(String, String)> {
        self.purge(now);
        let (player, _) = self.player_codes.remove(player_code.trim())?;
        let code = self.unused_code();
        let secret = crate::store::tokens::generate("pa");
        self.typed.insert(
            code.clone(),
            Entry {
                secret: secret.clone(),
                player: Some(player),
                verified: false,
                expires: now + self.ttl,
            },
        );
        Some((code, secret))
    }

    /// `player` typed `code` in game.
    pub fn claim(&mut self, code: &str, player: &str, now: Instant) -> Claim {
        self.purge(now);
        let Some(e) = self.typed.get_mut(code.trim()) else {
            return Claim::Unknown;
        };
        if e.verified {
            return Claim::Unknown;
        }
        match &e.player {
            Some(p) if p != player => return Claim::WrongPlayer,
            Some(_) => {}
            None => e.player = Some(player.to_string()),
        }
        e.verified = true;
        Claim::Accepted
    }

    /// The browser asks whether its code has been typed.
    pub fn poll(&mut self, code: &str, secret: &str, now: Instant) -> Poll {
        self.purge(now);
        let Some(e) = self.typed.get(code) else {
            return Poll::Unknown;
        };
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(e.secret.as_bytes(), secret.as_bytes()).into();
        if !same {
            return Poll::Unknown;
        }
        if !e.verified {
            return Poll::Pending;
        }
        match self.typed.remove(code).and_then(|e| e.player) {
            Some(p) => Poll::Verified(p),
            None => Poll::Unknown,
        }
    }
}

/// At most `max` attempts per `window` for each key (an address, a player).
pub struct RateLimit {
    pub max: usize,
    pub window: Duration,
    hits: HashMap<String, VecDeque<Instant>>,
}

impl RateLimit {
    pub fn new(max: usize, window: Duration) -> RateLimit {
        RateLimit {
            max,
            window,
            hits: HashMap::new(),
        }
    }

    /// Counts an attempt; false when the key has used up its attempts for now.
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        let window = self.window;
        self.hits.retain(|_, q| {
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            !q.is_empty()
        });
        let q = self.hits.entry(key.to_string()).or_default();
        if q.len() >= self.max {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(120);

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let c = new_code(64);
        assert_eq!(c.len(), 64);
        assert!(c.bytes().all(|b| ALPHABET.contains(&b)), "{c}");
        for bad in "0O1lI2Z".bytes() {
            assert!(!ALPHABET.contains(&bad), "{}", bad as char);
        }
    }

    #[test]
    fn web_first_logs_in_whoever_typed_it_once() {
        let now = Instant::now();
        let mut codes = Codes::new(6, TTL);
        let (code, secret) = codes.web_start(now);
        assert_eq!(code.len(), 6);
        assert_eq!(codes.poll(&code, &secret, now), Poll::Pending);
        assert_eq!(codes.poll(&code, "pa_wrong", now), Poll::Unknown);
        assert_eq!(codes.claim("nope", "alice", now), Claim::Unknown);
        assert_eq!(codes.claim(&code, "alice", now), Claim::Accepted);
        assert_eq!(codes.claim(&code, "bob", now), Claim::Unknown, "single use");
        assert_eq!(
            codes.poll(&code, &secret, now),
            Poll::Verified("alice".into())
        );
        assert_eq!(codes.poll(&code, &secret, now), Poll::Unknown, "single use");
    }

    #[test]
    fn game_first_only_the_player_may_type_the_verify_code() {
        let now = Instant::now();
        let mut codes = Codes::new(6, TTL);
        let player_code = codes.game_start("alice", now);
        assert!(codes.enter_player_code("wrong", now).is_none());
        let (verify, secret) = codes.enter_player_code(&player_code, now).unwrap();
        assert!(
            codes.enter_player_code(&player_code, now).is_none(),
            "single use"
        );
        assert_eq!(codes.claim(&verify, "bob", now), Claim::WrongPlayer);
        assert_eq!(codes.poll(&verify, &secret, now), Poll::Pending);
        assert_eq!(codes.claim(&verify, "alice", now), Claim::Accepted);
        assert_eq!(
            codes.poll(&verify, &secret, now),
            Poll::Verified("alice".into())
        );
    }

    #[test]
    fn codes_expire() {
        let now = Instant::now();
        let later = now + TTL + Duration::from_secs(1);
        let mut codes = Codes::new(6, TTL);
        let (code, secret) = codes.web_start(now);
        assert_eq!(codes.claim(&code, "alice", later), Claim::Unknown);
        assert_eq!(codes.poll(&code, &secret, later), Poll::Unknown);
        let player_code = codes.game_start("alice", now);
        assert!(codes.enter_player_code(&player_code, later).is_none());
    }

    #[test]
    fn attempts_are_limited_per_key_and_window() {
        let now = Instant::now();
        let mut rl = RateLimit::new(3, Duration::from_secs(60));
        assert!((0..3).all(|_| rl.allow("1.2.3.4", now)));
        assert!(!rl.allow("1.2.3.4", now));
        assert!(rl.allow("5.6.7.8", now));
        assert!(rl.allow("1.2.3.4", now + Duration::from_secs(60)));
    }
}
