//! How ctl prints: aligned tables and short sentences for people, the API's JSON for scripts
//! (`--json`), colours only on a terminal and never with `NO_COLOR`, progress on stderr only when
//! stderr is a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Output settings of one ctl run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print the API's JSON instead of tables and sentences.
    pub json: bool,
    /// ANSI colours on stdout.
    pub color: bool,
    /// Progress bars and spinners on stderr.
    pub progress: bool,
}

impl Output {
    /// Colours when stdout is a terminal, `NO_COLOR` is unset or empty and `TERM` is not `dumb`.
    pub fn detect(json: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Output {
            json,
            color: !json && !no_color && !dumb && std::io::stdout().is_terminal(),
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// Prints `value` as pretty JSON (the `--json` form of every command).
    pub fn print_json(&self, value: &Value) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        write_stdout(&text)
    }

    /// Prints the JSON reply with `--json`, else the sentence `human` builds from it.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) -> anyhow::Result<()> {
        if self.json {
            self.print_json(value)
        } else {
            let mut text = human(value);
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            write_stdout(&text)
        }
    }

    /// `text` in `style` when colours are on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("\x1b[{}m{text}\x1b[0m", style.code())
        } else {
            text.to_string()
        }
    }

    /// An instance status, coloured by what it means for players.
    pub fn status(&self, status: &str) -> String {
        let style = match status {
            "running" => Style::Green,
            "starting" | "stopping" | "creating_save" => Style::Yellow,
            "crashed" => Style::Red,
            "unknown" | "unassigned" => Style::Dim,
            _ => Style::Plain,
        };
        self.paint(style, status)
    }

    /// A spinner for a wait such as an instance start; hidden when stderr is not a terminal.
    pub fn spinner(&self, message: impl Into<String>) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    /// A byte progress bar for a transfer of `total` bytes (unknown: a spinner with a count).
    pub fn transfer_bar(&self, total: Option<u64>, message: impl Into<String>) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(total, self.target());
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        } else {
            "{spinner} {msg} {bytes} {bytes_per_sec}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(message.into());
        bar
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    Plain,
    Bold,
    Dim,
    Green,
    Yellow,
    Red,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Plain => "0",
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Red => "31",
        }
    }
}

/// Writes to stdout; a closed pipe (`ctl instance list | head -1`) is not an error.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// An aligned table: a bold header row, then one row per item; cells may carry ANSI colours.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text; `empty` is printed instead when there are no rows.
    pub fn render(&self, out: &Output, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| visible_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(visible_width(cell));
                }
            }
        }
        let mut text = String::new();
        let line = |text: &mut String, cells: &[String], header: bool| {
            let last = cells.len().saturating_sub(1);
            for (i, cell) in cells.iter().enumerate() {
                let shown = if header {
                    out.paint(Style::Bold, cell)
                } else {
                    cell.clone()
                };
                text.push_str(&shown);
                if i < last {
                    let pad = widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(visible_width(cell));
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push('\n');
        };
        line(&mut text, &self.header, true);
        for row in &self.rows {
            line(&mut text, row, false);
        }
        text
    }
}

/// Width of `s` on screen: characters outside ANSI escape sequences.
fn visible_width(s: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Milliseconds since the Unix epoch → `2026-05-01 12:03:04` (UTC).
pub fn time_ms(ms: &Value) -> String {
    let Some(ms) = ms.as_i64() else {
        return "-".into();
    };
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3725` → `1h 2m 5s`.
pub fn duration_s(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(time_ms(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(time_ms(&json!(951_782_400_000_i64)), "2000-02-29 00:00:00");
        assert_eq!(
            time_ms(&json!(1_777_636_984_000_i64)),
            "2026-05-01 12:03:04"
        );
    }

    #[test]
    fn tables_align_on_visible_width() {
        let out = Output {
            json: false,
            color: true,
            progress: false,
        };
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["a".into(), out.status("running")]);
        t.row(vec!["longer".into(), "stopped".into()]);
        let text = t.render(&out, "none");
        let plain: Vec<String> = text
            .lines()
            .map(|l| {
                let mut s = String::new();
                let mut esc = false;
                for c in l.chars() {
                    match (esc, c) {
                        (false, '\x1b') => esc = true,
                        (true, 'm') => esc = false,
                        (true, _) => {}
                        (false, c) => s.push(c),
                    }
                }
                s
            })
            .collect();
        assert_eq!(
            plain,
            ["NAME    STATUS", "a       running", "longer  stopped"]
        );
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration_s(3725), "1h 2m");
        assert_eq!(duration_s(65), "1m 5s");
    }
}
