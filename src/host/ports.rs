//! Game ports a host may give its instances: `SERVER_PORT` first, then the panel's further
//! allocations, written as a list and/or ranges (`34197,34200-34210`).

use anyhow::{Context, bail};

pub fn parse(spec: &str) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u16 = a
                    .trim()
                    .parse()
                    .with_context(|| format!("bad port range '{part}'"))?;
                let b: u16 = b
                    .trim()
                    .parse()
                    .with_context(|| format!("bad port range '{part}'"))?;
                if a > b {
                    bail!("bad port range '{part}': the first port is higher than the last");
                }
                ports.extend(a..=b);
            }
            None => ports.push(part.parse().with_context(|| format!("bad port '{part}'"))?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    ports.retain(|p| *p != 0 && seen.insert(*p));
    if ports.is_empty() {
        bail!("no game ports configured (game_ports / SERVER_PORT)");
    }
    Ok(ports)
}

/// Can a UDP socket bind this port right now (nobody else uses it)?
pub fn udp_free(bind: &str, port: u16) -> bool {
    std::net::UdpSocket::bind((bind, port)).is_ok()
}

/// A free TCP port on loopback, for RCON.
pub fn free_loopback_tcp() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        assert_eq!(parse("34197").unwrap(), vec![34197]);
        assert_eq!(
            parse("34197, 34200-34202,34197").unwrap(),
            vec![34197, 34200, 34201, 34202]
        );
        assert!(parse("x").is_err());
        assert!(parse("5-3").is_err());
        assert!(parse("").is_err());
    }
}
