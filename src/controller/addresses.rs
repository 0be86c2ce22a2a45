//! The join address of each host and instance (rules in [`crate::join_address`]): what a host
//! reports in `host_info` beside the address its link comes from.

use super::Controller;
use crate::join_address::{HostAddresses, JoinHost, with_port};
use crate::store;
use serde_json::Value;

impl Controller {
    /// A host said where it is (`host_info`): keep that with the address its link comes from.
    pub(super) async fn host_addresses(&self, host_id: i64, info: &Value) {
        let seen = self
            .store
            .read(move |c| store::hosts::get(c, &host_id.to_string()))
            .await
            .map(|h| h.address)
            .unwrap_or_default();
        let text = |k: &str| info[k].as_str().unwrap_or_default().trim().to_string();
        let addrs = HostAddresses {
            public_address: text("public_address"),
            allocation_ip: text("allocation_ip"),
            seen,
        };
        if let Ok(mut map) = self.join_addresses.lock() {
            map.insert(host_id, addrs);
        }
    }

    /// Where players reach a host, if any address is known to be reachable.
    pub(super) fn join_host(&self, host_id: i64) -> Option<JoinHost> {
        self.join_addresses
            .lock()
            .ok()
            .and_then(|m| m.get(&host_id).and_then(HostAddresses::join_host))
    }

    /// `host:port` of an instance's game, when its host and port are known.
    pub(super) fn join_address(&self, host_id: Option<i64>, port: Option<i64>) -> Option<String> {
        let port = u16::try_from(port?).ok()?;
        let host = self.join_host(host_id?)?;
        Some(with_port(&host.address, port))
    }
}
