//! What an instance's container looks like: Wings' settings (research/docker-backend.md §1.1),
//! with clustorio's own image and the host's Factorio install mounted read-only. Pure data: the
//! calls to the daemon are in the parent module.

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, PortBinding,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;

/// Labels every clustorio container carries; the host finds its containers by them.
pub const LABEL_HOST: &str = "clustorio.host";
pub const LABEL_INSTANCE: &str = "clustorio.instance";
pub const LABEL_INSTANCE_NAME: &str = "clustorio.instance_name";
/// `server` for a running instance, `create` for a one-shot `--create`.
pub const LABEL_ROLE: &str = "clustorio.role";
/// RCON listens on this port inside the container, on the host's network only.
pub const RCON_PORT: u16 = 27015;
/// Wings' `container_pid_limit`.
pub const PIDS_LIMIT: i64 = 512;
/// Wings' tmpfs for `/tmp` (the root filesystem is read-only).
pub const TMPFS: &str = "rw,exec,nosuid,size=100m";

/// Memory and CPU limits of one container; 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub memory_mb: u64,
    pub cpus: f64,
}

impl Limits {
    /// The instance's `memory_limit_mb` and `cpu_limit`, else the host's defaults.
    pub fn for_instance(config: &Value, defaults: Limits) -> Limits {
        Limits {
            memory_mb: config["memory_limit_mb"]
                .as_u64()
                .unwrap_or(defaults.memory_mb),
            cpus: config["cpu_limit"]
                .as_f64()
                .filter(|c| *c >= 0.0)
                .unwrap_or(defaults.cpus),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "memory_limit_mb": (self.memory_mb > 0).then_some(self.memory_mb),
            "cpu_limit": (self.cpus > 0.0).then_some(self.cpus),
        })
    }
}

/// A bind mount: `source` on the daemon's machine, `target` as the host sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// One container to create.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub image: String,
    pub entrypoint: String,
    pub args: Vec<String>,
    pub working_dir: String,
    /// `uid:gid`, the host's own, so files in the instance directory stay the host's.
    pub user: String,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub binds: Vec<Bind>,
    /// The UDP game port, published with the same number inside and out, on `publish_ip`
    /// (empty: every address). `None` for `--create`.
    pub game_port: Option<u16>,
    pub publish_ip: String,
    /// The host's network (RCON); `None` for no network at all.
    pub network: Option<String>,
    pub limits: Limits,
    pub stop_timeout_s: u64,
    /// Console attached: stdin kept open, no TTY (stdout and stderr stay apart, lines end in LF).
    pub console: bool,
}

/// `clustorio-<host>-<instance>`: both names are already limited to `[A-Za-z0-9._-]`.
pub fn container_name(host: &str, instance: &str, role: &str) -> String {
    let base = format!("clustorio-{}-{}", sanitize(host), sanitize(instance));
    if role == "server" {
        base
    } else {
        format!("{base}-{role}")
    }
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub fn labels(
    host: &str,
    instance_id: i64,
    instance_name: &str,
    role: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_HOST.to_string(), host.to_string()),
        (LABEL_INSTANCE.to_string(), instance_id.to_string()),
        (LABEL_INSTANCE_NAME.to_string(), instance_name.to_string()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ])
}

impl Plan {
    pub fn body(&self) -> ContainerCreateBody {
        let port_key = self.game_port.map(|p| format!("{p}/udp"));
        let port_bindings = port_key.as_ref().zip(self.game_port).map(|(key, p)| {
            HashMap::from([(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some(self.publish_ip.clone()),
                    host_port: Some(p.to_string()),
                }]),
            )])
        });
        let memory = Some(self.limits.memory_mb)
            .filter(|m| *m > 0)
            .and_then(|m| i64::try_from(m.saturating_mul(1 << 20)).ok());
        let host_config = HostConfig {
            mounts: Some(
                self.binds
                    .iter()
                    .map(|b| Mount {
                        source: Some(b.source.display().to_string()),
                        target: Some(b.target.display().to_string()),
                        typ: Some(MountType::BIND),
                        read_only: Some(b.read_only),
                        ..Default::default()
                    })
                    .collect(),
            ),
            tmpfs: Some(HashMap::from([("/tmp".to_string(), TMPFS.to_string())])),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(PIDS_LIMIT),
            init: Some(true),
            memory,
            // No swap beyond the limit: an instance over its limit is OOM-killed, not slowed.
            memory_swap: memory,
            nano_cpus: (self.limits.cpus > 0.0).then(|| (self.limits.cpus * 1e9).round() as i64),
            log_config: Some(HostConfigLogConfig {
                typ: Some("local".into()),
                // `local` refuses compression with a single file.
                config: Some(HashMap::from([
                    ("max-size".to_string(), "5m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                    ("compress".to_string(), "false".to_string()),
                    ("mode".to_string(), "non-blocking".to_string()),
                ])),
            }),
            network_mode: Some(self.network.clone().unwrap_or_else(|| "none".into())),
            port_bindings,
            // No restart policy: clustorio owns restarts.
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(vec![self.entrypoint.clone()]),
            cmd: Some(self.args.clone()),
            working_dir: Some(self.working_dir.clone()),
            user: Some(self.user.clone()),
            env: Some(self.env.clone()),
            labels: Some(self.labels.clone()),
            attach_stdin: Some(self.console),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            open_stdin: Some(self.console),
            stdin_once: Some(false),
            tty: Some(false),
            stop_signal: Some("SIGINT".into()),
            stop_timeout: Some(self.stop_timeout_s as i64),
            exposed_ports: port_key.map(|k| vec![k]),
            networking_config: self.network.as_ref().map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(n.clone(), EndpointSettings::default())])),
            }),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// The value after `flag` in a command line (to read back what a container was started with).
pub fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            name: container_name("host a", "east", "server"),
            image: "img".into(),
            entrypoint: "/opt/factorio/bin/x64/factorio".into(),
            args: vec!["--port".into(), "34197".into()],
            working_dir: "/srv/i".into(),
            user: "1000:1000".into(),
            env: vec![],
            labels: labels("host a", 7, "east", "server"),
            binds: vec![Bind {
                source: "/d/opt".into(),
                target: "/opt/factorio".into(),
                read_only: true,
            }],
            game_port: Some(34197),
            publish_ip: "".into(),
            network: Some("clustorio-a".into()),
            limits: Limits {
                memory_mb: 512,
                cpus: 1.5,
            },
            stop_timeout_s: 30,
            console: true,
        }
    }

    #[test]
    fn containers_are_hardened_limited_and_labelled() {
        let p = plan();
        assert_eq!(p.name, "clustorio-host-a-east");
        let b = p.body();
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(h.pids_limit, Some(512));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.memory, Some(512 << 20));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert!(h.restart_policy.is_none(), "clustorio owns restarts");
        let ports = h.port_bindings.as_ref().unwrap();
        let bound = ports["34197/udp"].as_ref().unwrap();
        assert_eq!(
            bound[0].host_port.as_deref(),
            Some("34197"),
            "same number outside"
        );
        assert_eq!(ports.len(), 1, "RCON is never published");
        assert_eq!(b.tty, Some(false));
        assert_eq!(b.open_stdin, Some(true));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(b.labels.as_ref().unwrap()[LABEL_INSTANCE], "7");
        let m = &h.mounts.as_ref().unwrap()[0];
        assert_eq!(m.source.as_deref(), Some("/d/opt"));
        assert_eq!(m.target.as_deref(), Some("/opt/factorio"));
        assert_eq!(m.read_only, Some(true));
    }

    #[test]
    fn instance_limits_override_the_hosts() {
        let d = Limits {
            memory_mb: 1024,
            cpus: 2.0,
        };
        assert_eq!(Limits::for_instance(&json!({}), d), d);
        assert_eq!(
            Limits::for_instance(&json!({"memory_limit_mb": 64, "cpu_limit": 0.5}), d),
            Limits {
                memory_mb: 64,
                cpus: 0.5
            }
        );
        let none = Limits::default().to_json();
        assert!(none["memory_limit_mb"].is_null() && none["cpu_limit"].is_null());
    }

    #[test]
    fn the_rcon_password_is_read_back_from_the_command_line() {
        let args: Vec<String> = ["--rcon-bind", "0.0.0.0:27015", "--rcon-password", "pw"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(arg_after(&args, "--rcon-password"), Some("pw"));
        assert_eq!(arg_after(&args, "--port"), None);
    }
}
