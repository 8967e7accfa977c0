//! Charts over the measured window's seconds: latency percentiles (p50, p99, p99.9 of
//! each second, from the per-second histograms) and open sessions with the stage plan's
//! target.

use std::path::Path;

use plotters::prelude::*;

use super::lines::{self, Line, Scale, Spec};
use super::{measured, RenderError};
use crate::report::Report;

/// p50, p99 and p99.9 per second of every report's measured window (log scale).
pub(crate) fn latency_over_time_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    type Pick = fn(&crate::runner::TimelinePoint) -> f64;
    let series: [(&str, Pick, u32); 3] = [
        ("p50", |p| p.p50_us, 1),
        ("p99", |p| p.p99_us, 2),
        ("p99.9", |p| p.p999_us, 3),
    ];
    let mut lines = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let base = Palette99::pick(i).to_rgba();
        for (name, pick, width) in series {
            // One colour per run; the thicker the line, the higher the percentile.
            lines.push(Line {
                label: format!("{} {name}", r.label),
                pts: measured(r)
                    .into_iter()
                    .filter(|(_, p)| pick(p) > 0.0)
                    .map(|(x, p)| (x, pick(p)))
                    .collect(),
                color: base.mix(0.4 + 0.2 * f64::from(width)),
                width,
            });
        }
    }
    let spec = Spec {
        caption: "Latency per second",
        x_desc: "seconds of the measured window",
        y_desc: "latency (µs, log)",
        y_label_area: 70,
        x_max: None,
        scale: Scale::Log,
        legend: SeriesLabelPosition::UpperLeft,
        x_labels: None,
    };
    lines::draw(path, &spec, lines)
}

/// Open sessions per second and the stage plan's session target.
pub(crate) fn sessions_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    let mut lines = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let open: Vec<(f64, f64)> = measured(r)
            .into_iter()
            .filter_map(|(x, p)| Some((x, p.open_sessions? as f64)))
            .collect();
        if open.is_empty() {
            continue;
        }
        lines.push(Line {
            label: format!("{} open", r.label),
            pts: open,
            color,
            width: 2,
        });
        lines.push(Line {
            label: format!("{} stage target", r.label),
            pts: measured(r)
                .into_iter()
                .filter_map(|(x, p)| Some((x, p.target?)))
                .collect(),
            color: color.mix(0.5),
            width: 1,
        });
    }
    let spec = Spec {
        caption: "Open sessions",
        x_desc: "seconds of the measured window",
        y_desc: "sessions",
        y_label_area: 80,
        x_max: None,
        scale: Scale::Linear,
        legend: SeriesLabelPosition::UpperRight,
        x_labels: None,
    };
    lines::draw(path, &spec, lines)
}
