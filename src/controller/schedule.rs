//! Bulk actions (start, stop or restart every instance of a host or of the cluster) and restart
//! schedules: per instance, daily at a UTC time or every N hours, with a chat warning N
//! minutes ahead, skipped while players are online if so configured. Schedules live in SQLite
//! (`restart_schedules`), so they survive controller restarts; the next run is committed
//! before a restart begins, so a crash in the middle never restarts twice.

use super::Controller;
use super::error::ApiError;
use super::hub::Event;
use super::requests::Ref;
use crate::store::{self, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Who the audit log names for what the scheduler does.
pub const SCHEDULER: &str = "scheduler";
const TICK: Duration = Duration::from_secs(1);
const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: i64 = 86_400_000;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS restart_schedules (
    instance_id INTEGER PRIMARY KEY REFERENCES instances(id) ON DELETE CASCADE,
    daily_at TEXT,
    every_hours REAL,
    warn_minutes REAL NOT NULL DEFAULT 5,
    skip_if_players INTEGER NOT NULL DEFAULT 0,
    next_run_ms INTEGER NOT NULL,
    warned_for_ms INTEGER,
    last_run_ms INTEGER,
    last_result TEXT
)";

/// What a user sets: exactly one of `daily_at` ("HH:MM", UTC) and `every_hours`.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleFields {
    #[serde(default)]
    pub daily_at: Option<String>,
    #[serde(default)]
    pub every_hours: Option<f64>,
    #[serde(default)]
    pub warn_minutes: Option<f64>,
    #[serde(default)]
    pub skip_if_players: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub instance_id: i64,
    pub daily_at: Option<String>,
    pub every_hours: Option<f64>,
    pub warn_minutes: f64,
    pub skip_if_players: bool,
    pub next_run_ms: i64,
    #[serde(skip)]
    pub warned_for_ms: Option<i64>,
    pub last_run_ms: Option<i64>,
    pub last_result: Option<String>,
}

/// "HH:MM" → minutes after midnight.
fn parse_daily(s: &str) -> Result<i64, String> {
    let bad = || format!("daily_at '{s}' is not a time: use HH:MM (24-hour, UTC), e.g. 04:30");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Schedule {
    /// The first run strictly after `now` (interval schedules count from `from`).
    fn next_after(&self, now: i64, from: i64) -> i64 {
        if let Some(d) = self.daily_at.as_deref().and_then(|d| parse_daily(d).ok()) {
            let midnight = now - now.rem_euclid(DAY_MS);
            let today = midnight + d * 60_000;
            return if today > now { today } else { today + DAY_MS };
        }
        let period = (self.every_hours.unwrap_or(24.0) * HOUR_MS).max(1000.0) as i64;
        let next = from + period;
        if next > now { next } else { now + period }
    }

    fn from_fields(instance_id: i64, f: &ScheduleFields, now: i64) -> Result<Schedule, String> {
        match (&f.daily_at, f.every_hours) {
            (Some(_), Some(_)) => {
                return Err("give either daily_at or every_hours, not both".into());
            }
            (None, None) => {
                return Err(
                    "a schedule needs daily_at (\"HH:MM\", UTC) or every_hours (a number > 0)"
                        .into(),
                );
            }
            (Some(d), None) => {
                parse_daily(d)?;
            }
            (None, Some(h)) => {
                if !(h.is_finite() && h > 0.0 && h <= 24.0 * 366.0) {
                    return Err(format!(
                        "every_hours must be a number above 0 (at most a year), not {h}"
                    ));
                }
            }
        }
        let warn = f.warn_minutes.unwrap_or(5.0);
        if !(warn.is_finite() && (0.0..=24.0 * 60.0).contains(&warn)) {
            return Err(format!("warn_minutes must be from 0 to 1440, not {warn}"));
        }
        let mut s = Schedule {
            instance_id,
            daily_at: f.daily_at.as_ref().map(|d| d.trim().to_string()),
            every_hours: f.every_hours,
            warn_minutes: warn,
            skip_if_players: f.skip_if_players.unwrap_or(false),
            next_run_ms: 0,
            warned_for_ms: None,
            last_run_ms: None,
            last_result: None,
        };
        s.next_run_ms = s.next_after(now, now);
        Ok(s)
    }

    fn warn_ms(&self) -> i64 {
        (self.warn_minutes * 60_000.0) as i64
    }
}

fn ensure_table(c: &Connection) -> store::Result<()> {
    c.execute_batch(TABLE)?;
    Ok(())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        instance_id: r.get(0)?,
        daily_at: r.get(1)?,
        every_hours: r.get(2)?,
        warn_minutes: r.get(3)?,
        skip_if_players: r.get::<_, i64>(4)? != 0,
        next_run_ms: r.get(5)?,
        warned_for_ms: r.get(6)?,
        last_run_ms: r.get(7)?,
        last_result: r.get(8)?,
    })
}

const COLUMNS: &str = "instance_id, daily_at, every_hours, warn_minutes, skip_if_players, next_run_ms, warned_for_ms, last_run_ms, last_result";

fn all(c: &Connection) -> store::Result<Vec<Schedule>> {
    ensure_table(c)?;
    let mut stmt = c.prepare(&format!("SELECT {COLUMNS} FROM restart_schedules"))?;
    let rows = stmt.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn get(c: &Connection, id: i64) -> store::Result<Option<Schedule>> {
    ensure_table(c)?;
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM restart_schedules WHERE instance_id = ?1"),
        [id],
        row,
    )
    .optional()?)
}

fn put(c: &Connection, s: &Schedule) -> store::Result<()> {
    ensure_table(c)?;
    c.execute(
        "INSERT INTO restart_schedules (instance_id, daily_at, every_hours, warn_minutes, skip_if_players, next_run_ms, warned_for_ms, last_run_ms, last_result)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(instance_id) DO UPDATE SET daily_at = ?2, every_hours = ?3, warn_minutes = ?4,
           skip_if_players = ?5, next_run_ms = ?6, warned_for_ms = ?7, last_run_ms = ?8, last_result = ?9",
        params![
            s.instance_id,
            s.daily_at,
            s.every_hours,
            s.warn_minutes,
            s.skip_if_players as i64,
            s.next_run_ms,
            s.warned_for_ms,
            s.last_run_ms,
            s.last_result
        ],
    )?;
    Ok(())
}

/// Which instances a bulk action touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    Start,
    Stop,
    Restart,
}

impl BulkAction {
    pub fn permission(self) -> &'static str {
        match self {
            BulkAction::Start => "core.instance.start",
            BulkAction::Stop => "core.instance.stop",
            BulkAction::Restart => "core.instance.restart",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            BulkAction::Start => "start",
            BulkAction::Stop => "stop",
            BulkAction::Restart => "restart",
        }
    }
}

fn active(status: &str) -> bool {
    matches!(status, "starting" | "running" | "creating_save")
}

impl Controller {
    pub async fn schedule_get(&self, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let id = rec.id;
        let s = self.store.read(move |c| get(c, id)).await?;
        Ok(json!({ "instance": rec.name, "schedule": s }))
    }

    pub async fn schedule_set(
        &self,
        who: &str,
        instance: Ref,
        fields: ScheduleFields,
    ) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let s = Schedule::from_fields(rec.id, &fields, store::now_ms())
            .map_err(ApiError::bad_request)?;
        let (w, name, saved) = (who.to_string(), rec.name.clone(), s.clone());
        self.store
            .write(move |c| {
                put(c, &saved)?;
                store::audit::record(c, &w, "schedule.set", &name, &json!(saved))
            })
            .await?;
        Ok(json!({ "instance": rec.name, "schedule": s }))
    }

    pub async fn schedule_delete(&self, who: &str, instance: Ref) -> Result<Value, ApiError> {
        let rec = self.record(&instance).await?;
        let (w, id, name) = (who.to_string(), rec.id, rec.name.clone());
        let removed = self
            .store
            .write(move |c| {
                ensure_table(c)?;
                let n = c.execute("DELETE FROM restart_schedules WHERE instance_id = ?1", [id])?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!(
                        "instance '{name}' has no restart schedule"
                    )));
                }
                store::audit::record(c, &w, "schedule.delete", &name, &json!({}))
            })
            .await;
        removed?;
        Ok(json!({ "instance": rec.name, "schedule": null }))
    }

    /// Starts, stops or restarts every instance (of `host`, if given) that the action applies
    /// to — start: assigned and not running; stop and restart: running. They run side by
    /// side; `bulk_progress` events report each one as it finishes.
    pub async fn bulk(
        &self,
        who: &str,
        action: BulkAction,
        host: Option<Ref>,
    ) -> Result<Value, ApiError> {
        let host_id = match host {
            Some(h) => {
                let h = h.to_string();
                Some(self.store.read(move |c| store::hosts::get(c, &h)).await?.id)
            }
            None => None,
        };
        let targets: Vec<_> = self
            .store
            .read(store::instances::list)
            .await?
            .into_iter()
            .filter(|i| i.host_id.is_some() && (host_id.is_none() || i.host_id == host_id))
            .filter(|i| match action {
                BulkAction::Start => !active(&i.status),
                BulkAction::Stop | BulkAction::Restart => active(&i.status),
            })
            .collect();
        let total = targets.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        let runs = targets.into_iter().map(|rec| {
            let done = &done;
            async move {
                let r = Ref::Id(rec.id);
                let result = match action {
                    BulkAction::Start => self.start(who, r, None).await,
                    BulkAction::Stop => self.stop(who, r).await,
                    BulkAction::Restart => self.restart(who, r).await,
                };
                let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                let entry = match &result {
                    Ok(v) => json!({ "instance": rec.name, "ok": true, "status": v["status"] }),
                    Err(e) => json!({ "instance": rec.name, "ok": false, "error": e.message }),
                };
                self.hub.publish(Event {
                    name: "bulk_progress",
                    data: json!({ "action": action.as_str(), "done": n, "total": total, "result": entry }),
                    permission: "core.instance.subscribe",
                    to_hosts: false,
                    instance_view: false,
                });
                entry
            }
        });
        let results = futures_util::future::join_all(runs).await;
        let failed = results.iter().filter(|r| r["ok"] != json!(true)).count();
        Ok(
            json!({ "action": action.as_str(), "total": total, "failed": failed, "results": results }),
        )
    }
}

/// Runs due schedules until the controller stops.
pub fn spawn(ctl: Arc<Controller>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = ctl.store.write(ensure_table).await {
            tracing::error!(error = %e, "restart schedules unavailable");
            return;
        }
        // Runs missed while the controller was down are not made up: the next one counts.
        let now = store::now_ms();
        if let Ok(list) = ctl.store.read(all).await {
            for mut s in list.into_iter().filter(|s| s.next_run_ms < now - 60_000) {
                s.next_run_ms = s.next_after(now, s.next_run_ms);
                let _ = ctl.store.write(move |c| put(c, &s)).await;
            }
        }
        loop {
            tokio::time::sleep(TICK).await;
            if ctl.shutdown.is_triggered() {
                return;
            }
            let Ok(list) = ctl.store.read(all).await else {
                continue;
            };
            for s in list {
                tick(&ctl, s).await;
            }
        }
    })
}

async fn tick(ctl: &Arc<Controller>, mut s: Schedule) {
    let now = store::now_ms();
    let run_at = s.next_run_ms;
    if now < run_at - s.warn_ms() {
        return;
    }
    let Ok(rec) = ctl.record(&Ref::Id(s.instance_id)).await else {
        return;
    };
    let players = ctl
        .instance_view(rec.clone())
        .await
        .ok()
        .and_then(|v| v["players_online"].as_array().map(|a| a.len()))
        .unwrap_or(0);
    let running = rec.status == "running";
    if now < run_at {
        if s.warned_for_ms != Some(run_at) {
            s.warned_for_ms = Some(run_at);
            let saved = s.clone();
            if ctl.store.write(move |c| put(c, &saved)).await.is_err() {
                return;
            }
            if running && !(s.skip_if_players && players > 0) {
                let mins = ((run_at - now) as f64 / 60_000.0).ceil().max(1.0) as i64;
                let text = format!(
                    "[clustorio] Scheduled restart in {mins} minute{}.",
                    if mins == 1 { "" } else { "s" }
                );
                let _ = ctl.rcon(SCHEDULER, Ref::Id(rec.id), text).await;
            }
        }
        return;
    }
    // Due: record the next run first, so a crash now never repeats this one.
    s.next_run_ms = s.next_after(now, run_at);
    s.last_run_ms = Some(now);
    let result = if !running {
        format!("skipped: the instance was {}", rec.status)
    } else if s.skip_if_players && players > 0 {
        format!(
            "skipped: {players} player{} online",
            if players == 1 { "" } else { "s" }
        )
    } else {
        "restarting".to_string()
    };
    s.last_result = Some(result.clone());
    let saved = s.clone();
    let name = rec.name.clone();
    let detail = json!({ "result": result, "next_run_ms": s.next_run_ms });
    let committed = ctl
        .store
        .write(move |c| {
            put(c, &saved)?;
            store::audit::record(c, SCHEDULER, "schedule.run", &name, &detail)
        })
        .await;
    if committed.is_err() || result != "restarting" {
        tracing::info!(instance = %rec.name, %result, "scheduled restart");
        return;
    }
    let ctl = ctl.clone();
    tokio::spawn(async move {
        let outcome = match ctl.restart(SCHEDULER, Ref::Id(rec.id)).await {
            Ok(_) => "restarted".to_string(),
            Err(e) => format!("failed: {}", e.message),
        };
        tracing::info!(instance = %rec.name, result = %outcome, "scheduled restart");
        let id = rec.id;
        let _ = ctl
            .store
            .write(move |c| {
                ensure_table(c)?;
                c.execute(
                    "UPDATE restart_schedules SET last_result = ?2 WHERE instance_id = ?1",
                    params![id, outcome],
                )?;
                Ok(())
            })
            .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(daily: Option<&str>, hours: Option<f64>) -> ScheduleFields {
        ScheduleFields {
            daily_at: daily.map(String::from),
            every_hours: hours,
            warn_minutes: None,
            skip_if_players: None,
        }
    }

    #[test]
    fn daily_runs_at_the_next_occurrence_of_the_time() {
        // 2026-12-01 10:00 UTC.
        let now = 1_796_119_200_000;
        let s = Schedule::from_fields(1, &fields(Some("04:30"), None), now).unwrap();
        assert_eq!(
            s.next_run_ms,
            now - now.rem_euclid(DAY_MS) + DAY_MS + 270 * 60_000
        );
        let s = Schedule::from_fields(1, &fields(Some("23:00"), None), now).unwrap();
        assert_eq!(s.next_run_ms, now - now.rem_euclid(DAY_MS) + 23 * 3_600_000);
    }

    #[test]
    fn interval_runs_count_from_the_last_one() {
        let s = Schedule::from_fields(1, &fields(None, Some(6.0)), 0).unwrap();
        assert_eq!(s.next_run_ms, 6 * 3_600_000);
        assert_eq!(s.next_after(6 * 3_600_000, 6 * 3_600_000), 12 * 3_600_000);
    }

    #[test]
    fn bad_schedules_are_named() {
        for (f, needle) in [
            (fields(None, None), "daily_at"),
            (fields(Some("25:00"), None), "HH:MM"),
            (fields(Some("4h"), None), "HH:MM"),
            (fields(Some("04:00"), Some(2.0)), "not both"),
            (fields(None, Some(0.0)), "every_hours"),
            (fields(None, Some(f64::NAN)), "every_hours"),
        ] {
            let e = Schedule::from_fields(1, &f, 0).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
