//! Texts the research could not pin down on a real server ([G] in research/factorio.md), kept in
//! one table so they are easy to correct when a real transcript turns up. Texts that *are* known
//! ([R]/[M]) are written inline where they are emitted.

pub const ACHIEVEMENTS_GATE: &str =
    "Using Lua console commands will disable achievements. Please repeat the command to proceed.";
pub const REFUSE_BANNED: &str = "UserBanned";
pub const REFUSE_NOT_WHITELISTED: &str = "NotWhitelisted";
pub const NO_LATEST_SAVE: &str = "No save file found in";
pub const SETTINGS_LOAD_FAILED: &str = "Failed to load server settings";
pub const NO_DEFAULT_SAVE: &str = "Can't save to default location: Default location not known";

pub fn unknown_command(name: &str) -> String {
    format!("Unknown command \"{name}\".")
}

pub fn player_not_found(name: &str) -> String {
    format!("Player \"{name}\" doesn't exist.")
}
