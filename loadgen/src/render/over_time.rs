//! Charts over the measured window's seconds: latency percentiles (p50, p99, p99.9 of
//! each second, from the per-second histograms) and open sessions with the stage plan's
//! target.

use std::path::Path;

use plotters::prelude::*;

use super::{chart_err, measured, RenderError};
use crate::report::Report;

/// p50, p99 and p99.9 per second of every report's measured window (log scale).
pub(crate) fn latency_over_time_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    type Pick = fn(&crate::runner::TimelinePoint) -> f64;
    let series: [(&str, Pick, u32); 3] = [
        ("p50", |p| p.p50_us, 1),
        ("p99", |p| p.p99_us, 2),
        ("p99.9", |p| p.p999_us, 3),
    ];
    let mut xmax: f64 = 1.0;
    let (mut ymin, mut ymax) = (f64::MAX, 1.0f64);
    for r in reports {
        for (x, p) in measured(r) {
            xmax = xmax.max(x);
            for (_, pick, _) in &series {
                let y = pick(p);
                if y > 0.0 {
                    ymin = ymin.min(y);
                    ymax = ymax.max(y);
                }
            }
        }
    }
    if ymin > ymax {
        ymin = 0.1;
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, ((ymin * 0.8)..(ymax * 1.25)).log_scale())
        .map_err(|e| chart_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("seconds of the measured window")
        .y_desc("latency (µs, log)")
        .draw()
        .map_err(|e| chart_err(path, e))?;
    for (i, r) in reports.iter().enumerate() {
        let base = Palette99::pick(i).to_rgba();
        for (name, pick, width) in series {
            // One colour per run; the thicker the line, the higher the percentile.
            let color = base.mix(0.4 + 0.2 * f64::from(width));
            let pts: Vec<(f64, f64)> = measured(r)
                .into_iter()
                .filter(|(_, p)| pick(p) > 0.0)
                .map(|(x, p)| (x, pick(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(width)))
                .map_err(|e| chart_err(path, e))?
                .label(format!("{} {name}", r.label))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_err(path, e))?;
    root.present().map_err(|e| chart_err(path, e))
}

/// Open sessions per second and the stage plan's session target.
pub(crate) fn sessions_chart(reports: &[Report], path: &Path) -> Result<(), RenderError> {
    let xmax = reports
        .iter()
        .flat_map(|r| measured(r).into_iter().map(|(x, _)| x))
        .fold(1.0f64, f64::max);
    let ymax = reports
        .iter()
        .flat_map(|r| {
            measured(r)
                .into_iter()
                .map(|(_, p)| (p.open_sessions.unwrap_or(0) as f64).max(p.target.unwrap_or(0.0)))
        })
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Open sessions", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.1)
        .map_err(|e| chart_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("seconds of the measured window")
        .y_desc("sessions")
        .draw()
        .map_err(|e| chart_err(path, e))?;
    for (i, r) in reports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let open: Vec<(f64, f64)> = measured(r)
            .into_iter()
            .filter_map(|(x, p)| Some((x, p.open_sessions? as f64)))
            .collect();
        if open.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(open, color.stroke_width(2)))
            .map_err(|e| chart_err(path, e))?
            .label(format!("{} open", r.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        let target: Vec<(f64, f64)> = measured(r)
            .into_iter()
            .filter_map(|(x, p)| Some((x, p.target?)))
            .collect();
        let faint = color.mix(0.5);
        chart
            .draw_series(LineSeries::new(target, faint.stroke_width(1)))
            .map_err(|e| chart_err(path, e))?
            .label(format!("{} stage target", r.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], faint));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_err(path, e))?;
    root.present().map_err(|e| chart_err(path, e))
}
