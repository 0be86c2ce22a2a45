//! clustorio: a clustered Factorio server manager. The binary (`src/main.rs`) maps each CLI role onto
//! one function here; everything else is a library so integration tests can reach the pieces.

pub mod config;
pub mod controller;
pub mod ctl;
pub mod demo;
pub mod host;
pub mod link;
pub mod permissions;
pub mod saves;
pub mod shutdown;
pub mod store;
