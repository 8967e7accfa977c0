//! The one line chart every `loadgen report` chart is: lines over an x range, a linear or
//! log y axis sized to the lines, a legend.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::{chart_err, RenderError};

/// One line of a chart.
pub(super) struct Line {
    pub(super) label: String,
    pub(super) pts: Vec<(f64, f64)>,
    pub(super) color: RGBAColor,
    pub(super) width: u32,
}

/// How the y axis is scaled.
#[derive(Clone, Copy)]
pub(super) enum Scale {
    /// From 0 to 1.1 × the largest value (at least 1).
    Linear,
    /// From 0.8 × the smallest positive value to 1.25 × the largest (log).
    Log,
}

/// What a chart shows besides its lines.
pub(super) struct Spec<'a> {
    pub(super) caption: &'a str,
    pub(super) x_desc: &'a str,
    pub(super) y_desc: &'a str,
    pub(super) y_label_area: u32,
    /// The x range's end; `None`: the largest x of the lines (at least 1).
    pub(super) x_max: Option<f64>,
    pub(super) scale: Scale,
    pub(super) legend: SeriesLabelPosition,
    /// Labels of the x axis (6 of them) instead of plotters' own.
    pub(super) x_labels: Option<&'a dyn Fn(&f64) -> String>,
}

/// Draws `lines` to the SVG file `path`.
pub(super) fn draw(path: &Path, spec: &Spec<'_>, lines: Vec<Line>) -> Result<(), RenderError> {
    let all = || lines.iter().flat_map(|l| l.pts.iter());
    let x_max = spec
        .x_max
        .unwrap_or_else(|| all().map(|p| p.0).fold(1.0, f64::max));
    let y_max = all().map(|p| p.1).fold(1.0, f64::max);
    match spec.scale {
        Scale::Linear => draw_on(path, spec, x_max, 0f64..y_max * 1.1, lines),
        Scale::Log => {
            let y_min = all()
                .map(|p| p.1)
                .filter(|y| *y > 0.0)
                .fold(f64::MAX, f64::min);
            let y_min = if y_min > y_max { 0.1 } else { y_min };
            draw_on(
                path,
                spec,
                x_max,
                ((y_min * 0.8)..(y_max * 1.25)).log_scale(),
                lines,
            )
        }
    }
}

fn draw_on<Y>(
    path: &Path,
    spec: &Spec<'_>,
    x_max: f64,
    y: Y,
    lines: Vec<Line>,
) -> Result<(), RenderError>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(spec.caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(spec.y_label_area)
        .build_cartesian_2d(0f64..x_max, y)
        .map_err(|e| chart_err(path, e))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(spec.x_desc).y_desc(spec.y_desc);
    if let Some(f) = spec.x_labels {
        mesh.x_labels(6).x_label_formatter(f);
    }
    mesh.draw().map_err(|e| chart_err(path, e))?;
    for l in lines {
        let style = l.color.stroke_width(l.width);
        chart
            .draw_series(LineSeries::new(l.pts, style))
            .map_err(|e| chart_err(path, e))?
            .label(l.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(spec.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_err(path, e))?;
    root.present().map_err(|e| chart_err(path, e))
}
