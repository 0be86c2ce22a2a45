//! `statistics_exporter`: each running game's statistics on the controller's `/metrics`, under
//! Clusterio's names (research/plugins.md §2.3, research/clusterio.md §6.2).
//!
//! The host asks each game every `statistics_exporter.interval_s` (`/sc
//! statistics_exporter.export()`, at most one call in flight, `command_timeout_s`), bounds the
//! label set and sends the sample to the controller (`statistics_exporter.sample`, an event). The
//! controller keeps the last sample of each instance, already rendered; a scrape only joins
//! those for instances that run now. A slow or frozen game's series keep their last values (and
//! `clustorio_statistics_exporter_sample_age_seconds` grows); a scrape never waits on a game.

use super::{Builtin, ControllerPlugin, HostPlugin, LuaModule, PluginInfo};
use crate::config::schema::{Default as D, Field, Kind};
use crate::controller::plugins::ControllerCtx;
use crate::host::backend::BoxFuture;
use crate::host::plugins::{HostCtx, InstanceCtx};
use crate::store;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static LUA: LuaModule = LuaModule {
    name: "statistics_exporter",
    version: "0.1.0",
    dependencies: &[("clusterio", "*")],
    load: &[],
    require: &["export.lua"],
    files: &[("export.lua", include_str!("export.lua"))],
};

static INFO: PluginInfo = PluginInfo {
    name: "statistics_exporter",
    title: "Statistics exporter",
    description: "Production, consumption, kills, pollution, players, tick and UPS of every game on /metrics.",
    version: "0.1.0",
    permissions: &[],
    lua: Some(&LUA),
    ipc_channels: &[],
    migrations: &[],
    settings: crate::config::PluginSettings {
        instance: &[
            super::load_plugin_field("statistics_exporter.load_plugin", "Statistics exporter"),
            Field::new("statistics_exporter.interval_s", Kind::Number { min: 0.1, max: 3600.0 }, D::Num(DEFAULT_INTERVAL_S))
                .title("Statistics interval")
                .about("Seconds between two samples of the game's statistics.")
                .section("Plugins"),
            Field::new("statistics_exporter.command_timeout_s", Kind::Number { min: 0.1, max: 60.0 }, D::Num(DEFAULT_TIMEOUT_S))
                .title("Statistics timeout")
                .about("How long one export may take before the game's series are left stale.")
                .section("Plugins"),
            Field::new("statistics_exporter.max_names", Kind::Integer { min: 1, max: 10_000 }, D::Int(DEFAULT_MAX_NAMES as i64))
                .title("Names per statistic")
                .about("Item or entity names kept per surface, force, statistic and direction; the rest are summed as \"other\".")
                .section("Plugins"),
        ],
        ..crate::config::PluginSettings::NONE
    },
};

pub const BUILTIN: Builtin = Builtin {
    info: &INFO,
    controller: || Some(Box::new(StatsController::default())),
    host: || Some(Box::new(StatsHost)),
};

/// Instance config defaults (`config["statistics_exporter"][…]`).
const DEFAULT_INTERVAL_S: f64 = 10.0;
const DEFAULT_TIMEOUT_S: f64 = 1.0;
const DEFAULT_MAX_NAMES: usize = 200;
/// Hard cap on series per instance, whatever the config says.
const MAX_SERIES: usize = 20_000;

fn setting(config: &Value, key: &str, default: f64, min: f64, max: f64) -> f64 {
    config[key]
        .as_f64()
        .filter(|v| v.is_finite())
        .unwrap_or(default)
        .clamp(min, max)
}

/// One sample's series: (family, labels after instance_id, value).
type Series = Vec<(usize, Vec<(&'static str, String)>, f64)>;

const FAMILIES: &[(&str, &str)] = &[
    (
        "clusterio_statistics_exporter_instance_player_count",
        "Players online in the game.",
    ),
    (
        "clusterio_statistics_exporter_instance_game_ticks_total",
        "The game's tick.",
    ),
    (
        "clusterio_statistics_exporter_instance_force_flow_statistics",
        "Force flow statistics (items, fluids, kills, buildings) since the map began.",
    ),
    (
        "clusterio_statistics_exporter_instance_game_flow_statistics",
        "Game flow statistics (pollution) since the map began.",
    ),
    (
        "clustorio_statistics_exporter_instance_ups",
        "Game updates per second between the last two samples.",
    ),
    (
        "clustorio_statistics_exporter_sample_age_seconds",
        "Seconds since the last sample from the game (grows while its RCON is slow or frozen).",
    ),
    (
        "clustorio_statistics_exporter_dropped_series",
        "Series left out of the last sample to bound label cardinality (summed into name=\"other\").",
    ),
];
const F_PLAYERS: usize = 0;
const F_TICKS: usize = 1;
const F_FORCE: usize = 2;
const F_GAME: usize = 3;
const F_UPS: usize = 4;
const F_AGE: usize = 5;
const F_DROPPED: usize = 6;

fn object(v: &Value) -> Option<&Map<String, Value>> {
    v.as_object()
}

/// A flow table `{input: {name: n}, output: {name: n}}` → series, the `max_names` largest per
/// direction, the rest summed into `other`; both directions for every name of item and fluid
/// production (Clusterio's convenience, for fluids too).
fn flow(
    out: &mut Series,
    dropped: &mut usize,
    family: usize,
    base: &[(&'static str, String)],
    statistic: &str,
    stats: &Value,
    max_names: usize,
) {
    let both =
        statistic == "item_production_statistics" || statistic == "fluid_production_statistics";
    let mut names: Vec<String> = Vec::new();
    if both {
        for dir in ["input", "output"] {
            if let Some(m) = object(&stats[dir]) {
                names.extend(m.keys().cloned());
            }
        }
        names.sort();
        names.dedup();
    }
    for dir in ["input", "output"] {
        let mut counts: Vec<(String, f64)> = object(&stats[dir])
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        v.as_f64().filter(|x| x.is_finite()).map(|x| (k.clone(), x))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if both {
            for n in &names {
                if !counts.iter().any(|(k, _)| k == n) {
                    counts.push((n.clone(), 0.0));
                }
            }
        }
        counts.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut other = 0.0;
        for (i, (name, value)) in counts.into_iter().enumerate() {
            if i >= max_names {
                other += value;
                *dropped += 1;
                continue;
            }
            let mut labels = base.to_vec();
            labels.push(("statistic", statistic.to_string()));
            labels.push(("direction", dir.to_string()));
            labels.push(("name", name));
            out.push((family, labels, value));
        }
        if other > 0.0 {
            let mut labels = base.to_vec();
            labels.push(("statistic", statistic.to_string()));
            labels.push(("direction", dir.to_string()));
            labels.push(("name", "other".to_string()));
            out.push((family, labels, other));
        }
    }
}

/// `statistics_exporter.export()`'s JSON → bounded series (without instance_id).
fn series_of(export: &Value, max_names: usize) -> (Series, usize) {
    let mut out = Series::new();
    let mut dropped = 0;
    if let Some(n) = export["player_count"].as_f64() {
        out.push((F_PLAYERS, vec![], n));
    }
    if let Some(t) = export["game_tick"].as_f64() {
        out.push((F_TICKS, vec![], t));
    }
    for (surface, s) in object(&export["surface_statistics"]).into_iter().flatten() {
        let base = vec![("surface", surface.clone())];
        for (statistic, stats) in object(&s["game_flow_statistics"]).into_iter().flatten() {
            flow(
                &mut out,
                &mut dropped,
                F_GAME,
                &base,
                statistic,
                stats,
                max_names,
            );
        }
        for (force, f) in object(&s["force_flow_statistics"]).into_iter().flatten() {
            let mut base = base.clone();
            base.push(("force", force.clone()));
            for (statistic, stats) in object(f).into_iter().flatten() {
                flow(
                    &mut out,
                    &mut dropped,
                    F_FORCE,
                    &base,
                    statistic,
                    stats,
                    max_names,
                );
            }
        }
    }
    if out.len() > MAX_SERIES {
        dropped += out.len() - MAX_SERIES;
        out.truncate(MAX_SERIES);
    }
    (out, dropped)
}

/// A label value in the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One instance's last sample, rendered per family.
struct Rendered {
    at: Instant,
    lines: Vec<String>,
}

fn render(instance_id: i64, sample: &Value) -> Rendered {
    let mut lines = vec![String::new(); FAMILIES.len()];
    let id = instance_id.to_string();
    for s in sample["series"].as_array().into_iter().flatten() {
        let (Some(f), Some(v)) = (
            s["f"]
                .as_u64()
                .map(|f| f as usize)
                .filter(|f| *f < FAMILIES.len()),
            s["v"].as_f64().filter(|v| v.is_finite()),
        ) else {
            continue;
        };
        let line = &mut lines[f];
        let _ = write!(line, "{}{{instance_id=\"{id}\"", FAMILIES[f].0);
        for (k, lv) in object(&s["l"]).into_iter().flatten() {
            if let Some(lv) = lv.as_str() {
                let key: String = k
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let _ = write!(line, ",{key}=\"{}\"", escape(lv));
            }
        }
        let _ = writeln!(line, "}} {v}");
    }
    if let Some(ups) = sample["ups"].as_f64().filter(|u| u.is_finite()) {
        let _ = writeln!(
            lines[F_UPS],
            "{}{{instance_id=\"{id}\"}} {ups}",
            FAMILIES[F_UPS].0
        );
    }
    if let Some(d) = sample["dropped"].as_u64() {
        let _ = writeln!(
            lines[F_DROPPED],
            "{}{{instance_id=\"{id}\"}} {d}",
            FAMILIES[F_DROPPED].0
        );
    }
    Rendered {
        at: Instant::now(),
        lines,
    }
}

#[derive(Default)]
struct StatsController {
    last: Mutex<HashMap<i64, Rendered>>,
}

impl ControllerPlugin for StatsController {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn host_event<'a>(
        &'a self,
        _ctx: &'a ControllerCtx,
        host_id: i64,
        name: &'a str,
        data: Value,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(id) = data["instance_id"]
                .as_i64()
                .filter(|_| name == "statistics_exporter.sample")
            else {
                tracing::warn!(
                    plugin = "statistics_exporter",
                    host_id,
                    event = name,
                    "unknown or malformed event; ignored"
                );
                return;
            };
            let rendered = render(id, &data);
            if let Ok(mut last) = self.last.lock() {
                last.insert(id, rendered);
            }
        })
    }

    fn metrics<'a>(&'a self, ctx: &'a ControllerCtx) -> BoxFuture<'a, String> {
        Box::pin(async move {
            // Series only for instances that run now: a stopped or deleted one's disappear.
            let running: Vec<i64> = ctx
                .store()
                .read(store::instances::list)
                .await
                .map(|l| {
                    l.into_iter()
                        .filter(|r| r.status == "running")
                        .map(|r| r.id)
                        .collect()
                })
                .unwrap_or_default();
            let Ok(mut last) = self.last.lock() else {
                return String::new();
            };
            last.retain(|id, _| running.contains(id));
            let mut ids: Vec<&i64> = last.keys().collect();
            ids.sort();
            let mut out = String::new();
            for (f, (name, help)) in FAMILIES.iter().enumerate() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                for id in &ids {
                    if f == F_AGE {
                        let age = last[*id].at.elapsed().as_secs_f64();
                        let _ = writeln!(out, "{name}{{instance_id=\"{id}\"}} {age:.3}");
                    } else {
                        out.push_str(&last[*id].lines[f]);
                    }
                }
            }
            out
        })
    }

    fn status<'a>(&'a self, _ctx: &'a ControllerCtx) -> BoxFuture<'a, Value> {
        Box::pin(async move {
            let n = self.last.lock().map(|l| l.len()).unwrap_or(0);
            json!({ "instances_sampled": n })
        })
    }
}

struct StatsHost;

/// Asks one game for its statistics every interval while it runs.
async fn collect(inst: InstanceCtx) {
    let config = inst.config();
    let interval = Duration::from_secs_f64(setting(
        &config,
        "interval_s",
        DEFAULT_INTERVAL_S,
        0.1,
        3600.0,
    ));
    let timeout = Duration::from_secs_f64(setting(
        &config,
        "command_timeout_s",
        DEFAULT_TIMEOUT_S,
        0.1,
        60.0,
    ));
    let max_names = setting(
        &config,
        "max_names",
        DEFAULT_MAX_NAMES as f64,
        1.0,
        10_000.0,
    ) as usize;
    let mut previous: Option<(f64, Instant)> = None;
    let mut in_flight: Option<tokio::task::JoinHandle<Result<String, String>>> = None;
    while inst.running() {
        // At most one export in the game's RCON queue: a frozen game is not handed a pile.
        let call = match in_flight.take() {
            Some(h) if !h.is_finished() => {
                in_flight = Some(h);
                tokio::time::sleep(interval).await;
                continue;
            }
            _ => {
                let i = inst.clone();
                tokio::spawn(async move {
                    i.rcon_reply("/sc statistics_exporter.export()".into())
                        .await
                })
            }
        };
        let mut call = call;
        let reply = tokio::select! {
            r = &mut call => r.ok(),
            _ = tokio::time::sleep(timeout) => {
                in_flight = Some(call);
                None
            }
        };
        match reply {
            Some(Ok(text)) => match serde_json::from_str::<Value>(text.trim()) {
                Ok(export) => {
                    let (series, dropped) = series_of(&export, max_names);
                    let now = Instant::now();
                    let tick = export["game_tick"].as_f64();
                    let ups = match (tick, previous) {
                        (Some(t), Some((t0, at))) if t >= t0 => {
                            let dt = now.duration_since(at).as_secs_f64();
                            (dt > 0.0).then(|| (t - t0) / dt)
                        }
                        _ => None,
                    };
                    if let Some(t) = tick {
                        previous = Some((t, now));
                    }
                    let series: Vec<Value> = series
                        .into_iter()
                        .map(|(f, labels, v)| {
                            let l: Map<String, Value> = labels
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), json!(v)))
                                .collect();
                            json!({ "f": f, "l": l, "v": v })
                        })
                        .collect();
                    inst.send_event(
                        "statistics_exporter.sample",
                        json!({ "series": series, "ups": ups, "dropped": dropped }),
                    );
                }
                Err(e) => {
                    tracing::warn!(plugin = "statistics_exporter", instance = %inst.name, error = %e, reply = %text.chars().take(200).collect::<String>(), "export() answered something else")
                }
            },
            Some(Err(e)) => {
                tracing::debug!(plugin = "statistics_exporter", instance = %inst.name, error = %e, "export() failed")
            }
            None => {
                tracing::debug!(plugin = "statistics_exporter", instance = %inst.name, "export() timed out; series stay as they were")
            }
        }
        tokio::time::sleep(interval).await;
    }
}

impl HostPlugin for StatsHost {
    fn info(&self) -> &'static PluginInfo {
        &INFO
    }

    fn ipc(&self, inst: &InstanceCtx, channel: &str, _data: Value) {
        tracing::debug!(plugin = "statistics_exporter", instance = %inst.name, channel, "unexpected IPC");
    }

    fn controller_event(&self, _host: &HostCtx, name: &str, _data: Value) {
        tracing::debug!(
            plugin = "statistics_exporter",
            event = name,
            "unknown event"
        );
    }

    fn instance_started(&self, inst: &InstanceCtx) {
        tokio::spawn(collect(inst.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_bounded_and_fluids_get_both_directions() {
        let export = json!({
            "game_tick": 600, "player_count": 2,
            "surface_statistics": {"nauvis": {
                "game_flow_statistics": {"pollution_statistics": {"input": {"boiler": 3.5}, "output": {}}},
                "force_flow_statistics": {"player": {
                    "item_production_statistics": {"input": {"a": 5, "b": 4, "c": 3}, "output": {}},
                    "fluid_production_statistics": {"input": {"water": 10}, "output": {}},
                }},
            }},
        });
        let (series, dropped) = series_of(&export, 2);
        let has = |f: usize, name: &str, dir: &str, v: f64| {
            series.iter().any(|(ff, l, vv)| {
                *ff == f
                    && l.iter().any(|(k, x)| *k == "name" && x == name)
                    && l.iter().any(|(k, x)| *k == "direction" && x == dir)
                    && *vv == v
            })
        };
        assert!(has(F_FORCE, "a", "input", 5.0));
        assert!(has(F_FORCE, "other", "input", 3.0));
        assert!(has(F_FORCE, "water", "output", 0.0));
        assert!(has(F_GAME, "boiler", "input", 3.5));
        assert_eq!(dropped, 2, "c input and c output (zero) left out");
        let sample = json!({"series": series.iter().map(|(f, l, v)| {
            let l: Map<String, Value> = l.iter().map(|(k, x)| (k.to_string(), json!(x))).collect();
            json!({"f": f, "l": l, "v": v})
        }).collect::<Vec<_>>(), "ups": 60.0});
        let r = render(7, &sample);
        assert!(r.lines[F_TICKS].contains(
            "clusterio_statistics_exporter_instance_game_ticks_total{instance_id=\"7\"} 600"
        ));
        assert!(r.lines[F_UPS].contains("{instance_id=\"7\"} 60"));
    }

    #[test]
    fn bad_exports_give_no_series_and_labels_are_escaped() {
        assert!(series_of(&json!("nope"), 10).0.is_empty());
        assert!(
            series_of(&json!({"surface_statistics": [1, 2]}), 10)
                .0
                .is_empty()
        );
        let r = render(
            1,
            &json!({"series": [{"f": 99, "v": 1}, {"f": 2, "l": {"name": "a\"b"}, "v": 1}]}),
        );
        assert!(
            r.lines[F_FORCE].contains("name=\"a\\\"b\""),
            "{:?}",
            r.lines
        );
    }
}
