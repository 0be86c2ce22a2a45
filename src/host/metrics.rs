//! What a host measures for the controller's `/metrics`: its own process, its machine, the disk
//! of its data directory, its game ports, and each running Factorio's CPU and memory — read
//! from `/proc` (processes) or from the Docker daemon's container stats (the Docker backend).
//! Sent every few seconds as the `host_metrics` link event; the controller keeps the last one.

use super::Host;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often a host sends its sample.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// A process's figures from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcStat {
    /// User + system time, seconds (clock-tick resolution, normally 10 ms).
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub vsize_bytes: u64,
    pub threads: u64,
    /// Unix seconds.
    pub start_time_seconds: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Seconds since the epoch at which the machine booted (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcStat {
    /// Parses the text of `/proc/<pid>/stat` (the command name may hold spaces and parens).
    pub fn parse(text: &str, tick: f64, page: u64, boot: f64) -> Option<Self> {
        let rest = &text[text.rfind(')')? + 1..];
        // Fields after the name, numbered from 3 (state) as in proc(5).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
        let utime = field(14)?;
        let stime = field(15)?;
        Some(ProcStat {
            cpu_seconds: (utime + stime) as f64 / tick,
            threads: field(20)?,
            start_time_seconds: boot + field(22)? as f64 / tick,
            vsize_bytes: field(23)?,
            rss_bytes: field(24)? * page,
        })
    }

    pub fn read(pid: u32) -> Option<Self> {
        Self::read_path(&format!("/proc/{pid}/stat"))
    }

    pub fn read_self() -> Option<Self> {
        Self::read_path("/proc/self/stat")
    }

    fn read_path(path: &str) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        Self::parse(&text, ticks_per_second(), page_size(), boot_time()?)
    }
}

pub fn open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

pub fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// (total, available) bytes of the machine's memory.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .map(|v: u64| v * 1024)
    };
    Some((kb("MemTotal:")?, kb("MemAvailable:")?))
}

/// (busy, idle) seconds of all cores (`cpu` line of `/proc/stat`; idle includes iowait).
fn system_cpu() -> Option<(f64, f64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let tick = ticks_per_second();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    // guest time is already counted in user.
    let total: u64 = v.iter().take(8).sum();
    Some(((total - idle) as f64 / tick, idle as f64 / tick))
}

/// (capacity, available) bytes of the file system holding `dir`.
pub fn disk(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs only writes into the struct we give it; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// One sample of this host, as the `host_metrics` event carries it.
pub async fn sample(host: &Host) -> Value {
    let mut h = serde_json::Map::new();
    if let Some(p) = ProcStat::read_self() {
        h.insert("cpu_seconds_total".into(), json!(p.cpu_seconds));
        h.insert("resident_memory_bytes".into(), json!(p.rss_bytes));
        h.insert("start_time_seconds".into(), json!(p.start_time_seconds));
    }
    if let Some((busy, idle)) = system_cpu() {
        h.insert("system_cpu_busy_seconds_total".into(), json!(busy));
        h.insert("system_cpu_idle_seconds_total".into(), json!(idle));
    }
    if let Some((total, available)) = memory() {
        h.insert("system_memory_capacity_bytes".into(), json!(total));
        h.insert("system_memory_available_bytes".into(), json!(available));
    }
    if let Some((total, available)) = disk(&host.dir) {
        h.insert("disk_capacity_bytes".into(), json!(total));
        h.insert("disk_available_bytes".into(), json!(available));
    }
    let instances = host.instances();
    let used = instances.iter().filter(|i| i.status().is_active()).count();
    h.insert("game_ports_total".into(), json!(host.ports.len()));
    h.insert(
        "game_ports_free".into(),
        json!(host.ports.len().saturating_sub(used)),
    );
    let mut per_instance = Vec::new();
    for inst in instances {
        let Some(server) = inst.server() else {
            continue;
        };
        let figures = match server.pid() {
            Some(pid) => ProcStat::read(pid).map(|p| (p.cpu_seconds, p.rss_bytes as f64)),
            None => host.backend.stats(server.as_ref()).await,
        };
        if let Some((cpu, rss)) = figures {
            per_instance.push(json!({
                "id": inst.id,
                "factorio_cpu_seconds_total": cpu,
                "factorio_resident_memory_bytes": rss,
            }));
        }
    }
    json!({ "host": h, "instances": per_instance })
}

/// Sends a sample every [`SAMPLE_INTERVAL`] while the link is up, until the host stops.
pub async fn report(host: Arc<Host>) {
    loop {
        if host.link.is_connected() {
            let s = sample(&host).await;
            host.link.send_event("host_metrics", s);
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_with_spaces_and_parens_in_the_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 123 45 0 0 20 0 7 0 5000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let p = ProcStat::parse(line, 100.0, 4096, 1_000_000.0).unwrap_or_else(|| panic!("parse"));
        assert!((p.cpu_seconds - 1.68).abs() < 1e-9, "{p:?}");
        assert_eq!(p.threads, 7);
        assert_eq!(p.vsize_bytes, 104_857_600);
        assert_eq!(p.rss_bytes, 2560 * 4096);
        assert!((p.start_time_seconds - 1_000_050.0).abs() < 1e-9);
    }

    #[test]
    fn own_process_and_machine_are_readable() {
        assert!(ProcStat::read_self().is_some());
        assert!(memory().is_some());
        assert!(system_cpu().is_some());
        assert!(disk(Path::new("/")).is_some_and(|(t, _)| t > 0));
    }
}
