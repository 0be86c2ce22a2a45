//! `player_auth` (in progress): log in to the web UI by proving you own a Factorio account
//! (research/plugins.md §2.4). Only the code store is here so far; the plugin is not yet in
//! [`super::builtins`].

pub mod codes;
