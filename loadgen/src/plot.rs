//! The plots of a sweep, drawn with plotters as SVG and PNG with no system font library: the
//! text font (Ubuntu Light, Ubuntu Font Licence 1.0) is embedded from the
//! `epaint_default_fonts` crate and registered with plotters' `ab_glyph` backend.
//!
//! * `rps.{svg,png}`: requests/s against PDK calls per request, one line per series;
//! * `latency.{svg,png}`: p50 (solid) and p99 (dashed) latency against calls;
//! * `rps_normalised.{svg,png}`: requests/s ÷ the series' 0-call value, with the shapes read off
//!   Kong's documentation graphs (Go, JavaScript, Python; `anchors.md` A1) drawn dashed in grey
//!   tones beside ours.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::{PointRecord, Results};

/// Kong's docs graph "RPS with IPC count per request", normalised to each language's 0-call
/// RPS (read off the image; `anchors.md` A1). `(calls, Go, JavaScript, Python)`; JS at 20 is
/// hidden under Python in the image and left out.
pub const DOCS_SHAPES: [(u32, f64, Option<f64>, f64); 8] = [
    (0, 1.0, Some(1.0), 1.0),
    (1, 0.83, Some(0.80), 0.83),
    (2, 0.69, Some(0.63), 0.67),
    (5, 0.47, Some(0.38), 0.37),
    (10, 0.32, Some(0.22), 0.22),
    (15, 0.24, Some(0.15), 0.16),
    (20, 0.21, None, 0.13),
    (30, 0.14, Some(0.08), 0.09),
];

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {file} failed: {reason}")]
    Draw { file: PathBuf, reason: String },
    #[error("the embedded font could not be loaded by plotters")]
    Font,
}

static FONT_OK: OnceLock<bool> = OnceLock::new();

fn register_font() -> Result<(), PlotError> {
    let ok = *FONT_OK.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dashed: bool,
    /// Draw markers only (a variant measured at a few call counts).
    markers_only: bool,
}

struct Chart {
    title: String,
    y_desc: String,
    lines: Vec<Line>,
}

fn series_of(results: &Results) -> Vec<(String, Vec<&PointRecord>)> {
    let mut out: Vec<(String, Vec<&PointRecord>)> = Vec::new();
    for p in results.points.iter().filter(|p| p.mode == "closed") {
        let key = p.series_key();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(p),
            None => out.push((key, vec![p])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by_key(|p| p.calls);
    }
    out
}

fn rps_chart(results: &Results) -> Chart {
    let lines = series_of(results)
        .into_iter()
        .enumerate()
        .map(|(i, (name, pts))| Line {
            markers_only: pts.iter().all(|p| p.variant != "single") && pts.len() < 3,
            name,
            points: pts.iter().map(|p| (f64::from(p.calls), p.rps)).collect(),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
        })
        .collect();
    Chart {
        title: "RPS with PDK calls per request".into(),
        y_desc: "requests per second".into(),
        lines,
    }
}

fn latency_chart(results: &Results) -> Chart {
    let mut lines = Vec::new();
    for (i, (name, pts)) in series_of(results).into_iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let markers_only = pts.iter().all(|p| p.variant != "single") && pts.len() < 3;
        lines.push(Line {
            name: format!("{name} p50"),
            points: pts.iter().map(|p| (f64::from(p.calls), p.latency_us.p50)).collect(),
            color,
            dashed: false,
            markers_only,
        });
        lines.push(Line {
            name: format!("{name} p99"),
            points: pts.iter().map(|p| (f64::from(p.calls), p.latency_us.p99)).collect(),
            color,
            dashed: true,
            markers_only,
        });
    }
    Chart {
        title: "Latency with PDK calls per request".into(),
        y_desc: "latency, µs".into(),
        lines,
    }
}

fn normalised_chart(results: &Results) -> Chart {
    let mut lines: Vec<Line> = series_of(results)
        .into_iter()
        .enumerate()
        .filter_map(|(i, (name, pts))| {
            let points: Vec<_> = pts
                .iter()
                .filter_map(|p| p.rps_normalised.map(|n| (f64::from(p.calls), n)))
                .collect();
            (!points.is_empty()).then(|| Line {
                name,
                points,
                color: PALETTE[i % PALETTE.len()],
                dashed: false,
                markers_only: false,
            })
        })
        .collect();
    let docs = [
        ("Kong docs: Go", RGBColor(60, 60, 60), 1usize),
        ("Kong docs: JavaScript", RGBColor(120, 120, 120), 2),
        ("Kong docs: Python", RGBColor(175, 175, 175), 3),
    ];
    for (name, color, col) in docs {
        let points = DOCS_SHAPES
            .iter()
            .filter_map(|&(c, go, js, py)| {
                let v = match col {
                    1 => Some(go),
                    2 => js,
                    _ => Some(py),
                };
                v.map(|v| (f64::from(c), v))
            })
            .collect();
        lines.push(Line {
            name: name.into(),
            points,
            color,
            dashed: true,
            markers_only: false,
        });
    }
    Chart {
        title: "RPS normalised to 0 calls, with Kong's docs curves".into(),
        y_desc: "RPS ÷ RPS at 0 calls".into(),
        lines,
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let x_max = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.08;
    let mut c = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|x| e(&x))?;
    c.configure_mesh()
        .x_desc("PDK calls per request")
        .y_desc(chart.y_desc.as_str())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|x| e(&x))?;
    for l in &chart.lines {
        let style = ShapeStyle {
            color: l.color.to_rgba(),
            filled: true,
            stroke_width: 2,
        };
        let anno = if l.markers_only {
            c.draw_series(
                l.points
                    .iter()
                    .map(move |&p| TriangleMarker::new(p, 7, style.filled())),
            )
            .map_err(|x| e(&x))?
        } else if l.dashed {
            c.draw_series(DashedLineSeries::new(l.points.clone(), 7, 5, style))
                .map_err(|x| e(&x))?
        } else {
            c.draw_series(LineSeries::new(l.points.clone(), style))
                .map_err(|x| e(&x))?
        };
        anno.label(l.name.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 22, y)], style)
        });
        if !l.markers_only {
            c.draw_series(
                l.points
                    .iter()
                    .map(move |&p| Circle::new(p, 3, style.filled())),
            )
            .map_err(|x| e(&x))?;
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

const SIZE: (u32, u32) = (1100, 680);

/// Writes the three plots as SVG and PNG into `dir`; returns the files written.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_font()?;
    let mut written = Vec::new();
    for (stem, chart) in [
        ("rps", rps_chart(results)),
        ("latency", latency_chart(results)),
        ("rps_normalised", normalised_chart(results)),
    ] {
        let svg = dir.join(format!("{stem}.svg"));
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), &chart).map_err(|reason| {
            PlotError::Draw {
                file: svg.clone(),
                reason,
            }
        })?;
        written.push(svg);
        let png = dir.join(format!("{stem}.png"));
        draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), &chart).map_err(|reason| {
            PlotError::Draw {
                file: png.clone(),
                reason,
            }
        })?;
        written.push(png);
    }
    Ok(written)
}
