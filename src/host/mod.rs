//! Host (slave) side: runs Factorio instances for the controller.

pub mod factorio;
