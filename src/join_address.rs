//! Where players connect: the address of a host as players can reach it, and each instance's
//! `host:port`. In order of trust:
//!
//! 1. the host's `public_address` (config-slave.json, or `PUBLIC_ADDRESS` in a panel);
//! 2. the panel's allocation IP (`SERVER_IP`, which Wings sets to the server's default
//!    allocation — Clusterio's egg uses it the same way), unless it is `0.0.0.0` or loopback;
//! 3. the address the controller sees the host's link come from, unless that is loopback (the
//!    host runs beside the controller; only the user's own URL of the controller says more) or
//!    in Docker's bridge range 172.16.0.0/12 (a container address nobody outside can reach).
//!
//! With none of them usable there is no join address, and the UI says so instead of guessing.

use serde::Serialize;
use std::net::IpAddr;

/// The panel's allocation IP variable (Wings sets it; an egg cannot declare it).
pub const ALLOCATION_IP_VAR: &str = "SERVER_IP";

/// What a host reports about its address, and what the controller saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostAddresses {
    pub public_address: String,
    pub allocation_ip: String,
    pub seen: String,
}

/// A host's address for players and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinHost {
    pub address: String,
    /// `public_address`, `allocation_ip` or `connection`.
    pub source: &'static str,
}

/// Why an address the controller saw cannot be shown to players, if it cannot.
pub fn unusable_reason(ip: &IpAddr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 172 && (16..32).contains(&o[1]) {
                Some("docker-internal")
            } else if v4.is_link_local() {
                Some("link-local")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if (seg[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                unusable_reason(&IpAddr::V4(v4))
            } else {
                None
            }
        }
    }
}

/// The allocation IP of a panel server, if the environment gives a usable one.
pub fn allocation_ip_from_env() -> String {
    std::env::var(ALLOCATION_IP_VAR)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| {
            v.parse::<IpAddr>()
                .is_ok_and(|ip| unusable_reason(&ip).is_none())
        })
        .unwrap_or_default()
}

impl HostAddresses {
    pub fn join_host(&self) -> Option<JoinHost> {
        let public = self.public_address.trim();
        if !public.is_empty() {
            return Some(JoinHost {
                address: public.to_string(),
                source: "public_address",
            });
        }
        let alloc = self.allocation_ip.trim();
        if alloc
            .parse::<IpAddr>()
            .is_ok_and(|ip| unusable_reason(&ip).is_none())
        {
            return Some(JoinHost {
                address: alloc.to_string(),
                source: "allocation_ip",
            });
        }
        let seen = self.seen.trim();
        match seen.parse::<IpAddr>() {
            Ok(ip) if unusable_reason(&ip).is_none() => Some(JoinHost {
                address: match ip {
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(v4) => v4.to_string(),
                        None => v6.to_string(),
                    },
                    IpAddr::V4(v4) => v4.to_string(),
                },
                source: "connection",
            }),
            _ => None,
        }
    }
}

/// `host:port` as a Factorio client takes it (`[v6]:port` for IPv6 addresses).
pub fn with_port(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else if let Some((h, p)) = host.rsplit_once(':')
        && !h.contains(':')
        && p.parse::<u16>().is_ok()
    {
        // A public_address that already names a port keeps it only if it is the game's.
        format!("{h}:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(public: &str, alloc: &str, seen: &str) -> HostAddresses {
        HostAddresses {
            public_address: public.into(),
            allocation_ip: alloc.into(),
            seen: seen.into(),
        }
    }

    #[test]
    fn public_address_then_allocation_then_what_the_controller_saw() {
        let j = addrs("play.example.org", "198.51.100.4", "203.0.113.9").join_host();
        assert_eq!(j.unwrap().address, "play.example.org");
        let j = addrs("", "198.51.100.4", "203.0.113.9")
            .join_host()
            .unwrap();
        assert_eq!(
            (j.address.as_str(), j.source),
            ("198.51.100.4", "allocation_ip")
        );
        let j = addrs("", "0.0.0.0", "203.0.113.9").join_host().unwrap();
        assert_eq!(
            (j.address.as_str(), j.source),
            ("203.0.113.9", "connection")
        );
        let j = addrs("", "", "::ffff:192.168.1.20").join_host().unwrap();
        assert_eq!(j.address, "192.168.1.20");
    }

    #[test]
    fn loopback_and_docker_addresses_are_never_shown() {
        for seen in [
            "127.0.0.1",
            "::1",
            "172.18.0.3",
            "172.17.0.1",
            "::ffff:172.20.0.2",
            "",
        ] {
            assert_eq!(addrs("", "127.0.0.1", seen).join_host(), None, "{seen}");
        }
        assert!(addrs("", "", "10.1.2.3").join_host().is_some());
    }

    #[test]
    fn ports_are_appended_the_way_factorio_reads_them() {
        assert_eq!(with_port("1.2.3.4", 34197), "1.2.3.4:34197");
        assert_eq!(with_port("2001:db8::1", 34197), "[2001:db8::1]:34197");
        assert_eq!(
            with_port("play.example.org:1", 34200),
            "play.example.org:34200"
        );
    }
}
