//! Prometheus metrics at `/metrics`, all prefixed `clustorio_`.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    link_messages: IntCounterVec,
    pub hosts: IntGaugeVec,
    pub instances: IntGaugeVec,
    pub sessions: IntGauge,
    plugin_messages: IntCounterVec,
    ipc_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("clustorio".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let link_messages = IntCounterVec::new(
            Opts::new("link_messages_total", "Link frames by direction and type."),
            &["direction", "type"],
        )?;
        let hosts = IntGaugeVec::new(
            Opts::new("hosts", "Hosts by state (connected, total)."),
            &["state"],
        )?;
        let instances =
            IntGaugeVec::new(Opts::new("instances", "Instances by status."), &["status"])?;
        let sessions = IntGauge::new(
            "link_sessions",
            "Open link sessions (attached or resumable).",
        )?;
        let plugin_messages = IntCounterVec::new(
            Opts::new(
                "plugin_messages_total",
                "Plugin messages by plugin and direction (in: from hosts, out: to hosts).",
            ),
            &["plugin", "direction"],
        )?;
        let ipc_errors = IntCounterVec::new(
            Opts::new(
                "plugin_ipc_errors_total",
                "Unusable IPC messages from games, by instance id and kind.",
            ),
            &["instance_id", "kind"],
        )?;
        registry.register(Box::new(plugin_messages.clone()))?;
        registry.register(Box::new(ipc_errors.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(link_messages.clone()))?;
        registry.register(Box::new(hosts.clone()))?;
        registry.register(Box::new(instances.clone()))?;
        registry.register(Box::new(sessions.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            http_requests,
            link_messages,
            hosts,
            instances,
            sessions,
            plugin_messages,
            ipc_errors,
        })
    }

    pub fn plugin_message(&self, plugin: &str, direction: &str) {
        self.plugin_messages
            .with_label_values(&[plugin, direction])
            .inc();
    }

    pub fn ipc_error(&self, instance_id: &str, kind: &str) {
        self.ipc_errors
            .with_label_values(&[instance_id, kind])
            .inc();
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
    }

    pub fn link_message(&self, direction: &str, kind: &str) {
        self.link_messages
            .with_label_values(&[direction, kind])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
