//! `loadgen report RUN.json... --out DIR`: a Markdown table of the runs and two SVG
//! charts (plotters): latency percentile curves of each run's primary latency (from the
//! stored histograms, so the curve is exact, not interpolated from a few percentiles),
//! throughput per second over the measured window (with a stage plan's target rate),
//! p50/p99/p99.9 per second over the measured window, and, for runs that open and close
//! sessions along stages, the open sessions per second.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use thiserror::Error;

use crate::histogram;
use crate::report::{Report, ReportError};

mod lines;
mod over_time;

use lines::{Line, Scale, Spec};

/// Rendering failed.
#[derive(Debug, Error)]
pub enum RenderError {
    /// Reading a report.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Writing output.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// plotters failed.
    #[error("chart {0}: {1}")]
    Chart(String, String),
}

/// Files written by [`render`].
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The Markdown summary.
    pub markdown: PathBuf,
    /// The SVG charts.
    pub charts: Vec<PathBuf>,
}

/// Reads `runs` and writes `README.md`, `latency.svg` and `throughput.svg` into `out`.
pub fn render(runs: &[PathBuf], out: &Path) -> Result<Rendered, RenderError> {
    let reports = runs
        .iter()
        .map(|p| Report::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(out).map_err(|e| RenderError::Io(out.display().to_string(), e))?;
    let latency = out.join("latency.svg");
    let throughput = out.join("throughput.svg");
    latency_chart(&reports, &latency)?;
    throughput_chart(&reports, &throughput)?;
    let over_time = out.join(OVER_TIME);
    over_time::latency_over_time_chart(&reports, &over_time)?;
    let mut charts = vec![latency, throughput, over_time];
    if reports
        .iter()
        .any(|r| r.timeline.iter().any(|p| p.open_sessions.is_some()))
    {
        let sessions = out.join(SESSIONS);
        over_time::sessions_chart(&reports, &sessions)?;
        charts.push(sessions);
    }
    let markdown = out.join("README.md");
    std::fs::write(&markdown, table(&reports, runs))
        .map_err(|e| RenderError::Io(markdown.display().to_string(), e))?;
    Ok(Rendered { markdown, charts })
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

/// The Markdown table.
pub fn table(reports: &[Report], paths: &[PathBuf]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# loadgen runs\n");
    let _ = writeln!(
        s,
        "| run | scenario | transport | sessions | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | errors | loadgen ns/msg | server ns/msg |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let x = &r.results;
        let l = &x.latency_us;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {}/{} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
            r.label,
            x.scenario,
            x.transport,
            x.sessions_established,
            x.sessions_requested,
            x.messages_per_sec,
            x.bytes_per_sec / 1e6,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            x.errors_total,
            opt(r.cpu.loadgen_cpu_ns_per_msg),
            opt(r.cpu.server_cpu_ns_per_msg),
        );
    }
    let _ = writeln!(
        s,
        "\nLatency is each run's primary latency (`latency_name`):"
    );
    for r in reports {
        let _ = writeln!(s, "- {}: `{}`", r.label, r.results.latency_name);
    }
    let _ = writeln!(s, "\n![latency percentiles](latency.svg)\n");
    let _ = writeln!(s, "![throughput](throughput.svg)\n");
    let _ = writeln!(s, "![latency over time]({OVER_TIME})\n");
    if reports
        .iter()
        .any(|r| r.timeline.iter().any(|p| p.open_sessions.is_some()))
    {
        let _ = writeln!(s, "![open sessions]({SESSIONS})\n");
    }
    let _ = writeln!(s, "## Provenance\n");
    for (r, p) in reports.iter().zip(paths) {
        let _ = writeln!(
            s,
            "- {} (`{}`): loadgen {} @ {}, {} × {}, kernel {}, {} s measured after {} s warm-up",
            r.label,
            p.display(),
            r.tool.version,
            r.tool.git_commit,
            r.machine.cores,
            r.machine.cpu_model,
            r.machine.kernel,
            r.results.duration_s,
            r.results.warmup_s
        );
        if let Some(from) = &r.merged_from {
            let _ = writeln!(s, "  - merged from {} workers:", from.len());
            for m in from {
                let _ = writeln!(s, "    - {}", m.line());
            }
        }
        for w in &r.warnings {
            let _ = writeln!(s, "  - warning: {w}");
        }
    }
    s
}

/// The chart of p50/p99/p99.9 per second.
pub const OVER_TIME: &str = "latency-over-time.svg";
/// The chart of open sessions per second (stage runs).
pub const SESSIONS: &str = "sessions.svg";

/// The timeline's seconds inside the measured window (all of them for a report whose
/// timeline has none marked so), with x = seconds since the window's start.
pub fn measured(r: &Report) -> Vec<(f64, &crate::runner::TimelinePoint)> {
    let m: Vec<_> = r.timeline.iter().filter(|p| p.phase == "measure").collect();
    let pts = if m.is_empty() {
        r.timeline.iter().collect()
    } else {
        m
    };
    let first = pts.first().map_or(1, |p| p.t_s);
    pts.into_iter()
        .map(|p| ((p.t_s + 1 - first) as f64, p))
        .collect()
}

fn chart_err(path: &Path, e: impl std::fmt::Display) -> RenderError {
    RenderError::Chart(path.display().to_string(), e.to_string())
}

/// x = number of nines: 0 → p0, 1 → p90, 2 → p99, 3 → p99.9 ...
fn nines_label(x: &f64) -> String {
    let pct = 100.0 * (1.0 - 10f64.powf(-x));
    if *x < 0.5 {
        "0%".into()
    } else {
        let digits = (x.round() as usize).saturating_sub(2);
        format!("{pct:.digits$}%")
    }
}

fn latency_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    const MAX_NINES: f64 = 5.0;
    let mut lines = Vec::new();
    for r in reports {
        let name = &r.results.latency_name;
        let Some(b64) = r.results.histograms.get(name) else {
            continue;
        };
        let h = histogram::decode(b64).map_err(ReportError::from)?;
        if h.is_empty() {
            continue;
        }
        let pts: Vec<(f64, f64)> = (0..=(MAX_NINES * 20.0) as u32)
            .map(|i| {
                let x = f64::from(i) / 20.0;
                let q = 1.0 - 10f64.powf(-x);
                (x, (h.value_at_quantile(q) as f64 / 1000.0).max(0.001))
            })
            .collect();
        lines.push(Line {
            label: r.label.clone(),
            pts,
            color: Palette99::pick(lines.len()).to_rgba(),
            width: 2,
        });
    }
    let spec = Spec {
        caption: "Latency by percentile",
        x_desc: "percentile",
        y_desc: "latency (µs, log)",
        y_label_area: 70,
        x_max: Some(MAX_NINES),
        scale: Scale::Log,
        legend: SeriesLabelPosition::UpperLeft,
        x_labels: Some(&nines_label),
    };
    lines::draw(path, &spec, lines)
}

fn throughput_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    let mut lines = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        lines.push(Line {
            label: r.label.clone(),
            pts: measured(r)
                .into_iter()
                .map(|(x, p)| (x, p.messages_per_sec))
                .collect(),
            color,
            width: 2,
        });
        let target: Vec<(f64, f64)> = measured(r)
            .into_iter()
            .filter_map(|(x, p)| Some((x, rate_target(r, p)?)))
            .collect();
        if !target.is_empty() {
            lines.push(Line {
                label: format!("{} (stage target)", r.label),
                pts: target,
                color: color.mix(0.5),
                width: 1,
            });
        }
    }
    let spec = Spec {
        caption: "Throughput per second",
        x_desc: "seconds of the measured window",
        y_desc: "messages / s",
        y_label_area: 80,
        x_max: None,
        scale: Scale::Linear,
        legend: SeriesLabelPosition::LowerRight,
        x_labels: None,
    };
    lines::draw(path, &spec, lines)
}

/// A stage plan's target of a rate run (for session-count plans the target is a session
/// count, charted with the open sessions instead).
fn rate_target(r: &Report, p: &crate::runner::TimelinePoint) -> Option<f64> {
    (r.results.scenario == "rate").then_some(p.target).flatten()
}

#[cfg(test)]
mod tests {
    use super::nines_label;

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(nines_label(&0.0), "0%");
        assert_eq!(nines_label(&1.0), "90%");
        assert_eq!(nines_label(&2.0), "99%");
        assert_eq!(nines_label(&3.0), "99.9%");
        assert_eq!(nines_label(&4.0), "99.99%");
    }
}
