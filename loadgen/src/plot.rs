//! The plots of a sweep, drawn with plotters as SVG and PNG with no system font library: the
//! text font (Ubuntu Light, Ubuntu Font Licence 1.0) is embedded from the
//! `epaint_default_fonts` crate and registered with plotters' `ab_glyph` backend.
//!
//! * `rps.{svg,png}`: requests/s against PDK calls per request, one line per series;
//! * `latency.{svg,png}`: p50 (solid) and p99 (dashed) latency against calls;
//! * `rps_normalised.{svg,png}`: requests/s ÷ the series' 0-call value (paired by trial where
//!   the points have the same trials: [`Results::normalised_paired`]), with the shapes read off
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
    log_y: bool,
}

/// A closed-loop series with its colour (one per server) and whether it is drawn dashed (every
/// concurrency but the lowest).
struct Series<'a> {
    name: String,
    points: Vec<&'a PointRecord>,
    color: RGBColor,
    dashed: bool,
    multicore: bool,
}

fn series_of(results: &Results) -> Vec<Series<'_>> {
    let mut servers: Vec<String> = Vec::new();
    let mut out: Vec<Series<'_>> = Vec::new();
    let min_c = results
        .points
        .iter()
        .filter(|p| p.variant == "single")
        .map(|p| p.concurrency)
        .min()
        .unwrap_or(1);
    for p in results.points.iter().filter(|p| p.mode == "closed") {
        let key = p.series_key();
        let server = format!("{} {}", p.peer, p.protocol);
        let idx = match servers.iter().position(|s| *s == server) {
            Some(i) => i,
            None => {
                servers.push(server);
                servers.len() - 1
            }
        };
        match out.iter_mut().find(|s| s.name == key) {
            Some(s) => s.points.push(p),
            None => out.push(Series {
                name: key,
                points: vec![p],
                color: PALETTE[idx % PALETTE.len()],
                dashed: p.variant == "single" && p.concurrency != min_c,
                multicore: p.variant != "single",
            }),
        }
    }
    for s in &mut out {
        s.points.sort_by_key(|p| p.calls);
    }
    out
}

fn rps_chart(results: &Results) -> Chart {
    let lines = series_of(results)
        .into_iter()
        .map(|s| Line {
            markers_only: s.multicore,
            points: s
                .points
                .iter()
                .map(|p| (f64::from(p.calls), p.rps))
                .collect(),
            name: s.name,
            color: s.color,
            dashed: s.dashed,
        })
        .collect();
    Chart {
        title: "RPS with PDK calls per request (dashed: higher concurrency, triangles: multicore)"
            .into(),
        y_desc: "requests per second (log scale)".into(),
        lines,
        log_y: true,
    }
}

fn latency_chart(results: &Results) -> Chart {
    let mut lines = Vec::new();
    let series = series_of(results);
    let min_c = series
        .iter()
        .filter(|s| !s.multicore)
        .flat_map(|s| s.points.iter().map(|p| p.concurrency))
        .min()
        .unwrap_or(1);
    for s in series.into_iter().filter(|s| !s.multicore) {
        if s.points.first().map(|p| p.concurrency) != Some(min_c) {
            continue;
        }
        lines.push(Line {
            name: format!("{} p50", s.name),
            points: s
                .points
                .iter()
                .map(|p| (f64::from(p.calls), p.latency_us.p50))
                .collect(),
            color: s.color,
            dashed: false,
            markers_only: false,
        });
        lines.push(Line {
            name: format!("{} p99", s.name),
            points: s
                .points
                .iter()
                .map(|p| (f64::from(p.calls), p.latency_us.p99))
                .collect(),
            color: s.color,
            dashed: true,
            markers_only: false,
        });
    }
    Chart {
        title: format!(
            "Latency with PDK calls per request (concurrency {min_c}; solid p50, dashed p99)"
        ),
        y_desc: "latency, µs (log scale)".into(),
        lines,
        log_y: true,
    }
}

fn normalised_chart(results: &Results) -> Chart {
    let mut lines: Vec<Line> = series_of(results)
        .into_iter()
        .filter(|s| !s.multicore)
        .filter_map(|s| {
            let points: Vec<_> = s
                .points
                .iter()
                .filter_map(|p| {
                    results
                        .normalised_paired(p)
                        .map(|n| (f64::from(p.calls), n))
                })
                .collect();
            (!points.is_empty()).then_some(Line {
                name: s.name,
                points,
                color: s.color,
                dashed: s.dashed,
                markers_only: false,
            })
        })
        .collect();
    let docs = [
        ("Kong docs: Go", RGBColor(40, 40, 40), 1usize),
        ("Kong docs: JavaScript", RGBColor(110, 110, 110), 2),
        ("Kong docs: Python", RGBColor(170, 170, 170), 3),
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
            dashed: false,
            markers_only: false,
        });
    }
    Chart {
        title: "RPS normalised to 0 calls (grey: Kong's docs curves)".into(),
        y_desc: "RPS ÷ RPS at 0 calls".into(),
        lines,
        log_y: false,
    }
}

/// Width of the legend column beside the plot: the legend never covers data.
const LEGEND_WIDTH: u32 = 330;

/// Tick values of a log axis: 1, 2 and 5 times each power of ten in `lo..=hi` (every integer
/// multiple when the range spans less than a decade), so the axis is readable between powers of
/// ten.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let steps: &[f64] = if hi / lo < 10.0 {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for m in steps {
            let v = decade * m;
            if v >= lo && v <= hi {
                out.push(v);
            }
        }
        decade *= 10.0;
    }
    out
}

/// A tick label: no decimals from 10 up, a few below.
fn tick_label(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}").trim_end_matches(".0").to_owned()
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let titled = root
        .titled(&chart.title, ("sans-serif", 22))
        .map_err(|x| e(&x))?;
    let (width, _) = titled.dim_in_pixel();
    let (plot, legend) = titled.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
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
    if chart.log_y {
        let y_min = chart
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|v| *v > 0.0 && v.is_finite())
            .fold(f64::INFINITY, f64::min);
        let y_min = if y_min.is_finite() { y_min / 1.5 } else { 1.0 };
        let y_top = y_max * 1.3;
        let mut c = ChartBuilder::on(&plot)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(
                0f64..x_max,
                (y_min..y_top)
                    .log_scale()
                    .with_key_points(log_ticks(y_min, y_top)),
            )
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_desc("PDK calls per request")
            .y_desc(chart.y_desc.as_str())
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| tick_label(*v))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(|x| e(&x))?;
        draw_lines(&mut c, chart)?;
    } else {
        let mut c = ChartBuilder::on(&plot)
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
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(|x| e(&x))?;
        draw_lines(&mut c, chart)?;
    }
    draw_legend(&legend, chart)?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn style_of(l: &Line) -> ShapeStyle {
    ShapeStyle {
        color: l.color.to_rgba(),
        filled: true,
        stroke_width: 2,
    }
}

fn draw_lines<'a, DB: DrawingBackend + 'a, Y: Ranged<ValueType = f64>>(
    c: &mut ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    chart: &Chart,
) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
    for l in &chart.lines {
        let style = style_of(l);
        if l.markers_only {
            c.draw_series(
                l.points
                    .iter()
                    .map(move |&p| TriangleMarker::new(p, 7, style.filled())),
            )
            .map_err(|x| e(&x))?;
            continue;
        }
        if l.dashed {
            c.draw_series(DashedLineSeries::new(l.points.clone(), 7, 5, style))
                .map_err(|x| e(&x))?;
        } else {
            c.draw_series(LineSeries::new(l.points.clone(), style))
                .map_err(|x| e(&x))?;
        }
        c.draw_series(
            l.points
                .iter()
                .map(move |&p| Circle::new(p, 3, style.filled())),
        )
        .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// The legend, in its own column: each entry drawn as its series is (solid or dashed line with
/// dot markers, or triangles), then its name.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart,
) -> Result<(), String> {
    let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
    let font = ("sans-serif", 14).into_font().color(&BLACK);
    for (i, l) in chart.lines.iter().enumerate() {
        let y = 30 + 22 * i32::try_from(i).unwrap_or(i32::MAX / 32);
        let (x0, x1) = (10, 46);
        let style = style_of(l);
        if l.markers_only {
            area.draw(&TriangleMarker::new((x0 + 18, y), 7, style.filled()))
                .map_err(|x| e(&x))?;
        } else {
            if l.dashed {
                for (a, b) in [(x0, x0 + 9), (x0 + 14, x0 + 23), (x0 + 28, x1)] {
                    area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
                        .map_err(|x| e(&x))?;
                }
            } else {
                area.draw(&PathElement::new(vec![(x0, y), (x1, y)], style))
                    .map_err(|x| e(&x))?;
            }
            area.draw(&Circle::new((x0 + 18, y), 3, style.filled()))
                .map_err(|x| e(&x))?;
        }
        area.draw(&Text::new(l.name.clone(), (x1 + 8, y - 8), font.clone()))
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

const SIZE: (u32, u32) = (1400, 680);

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 13, item 12): log axes were labelled only at powers of ten.
    #[test]
    fn log_axes_are_labelled_between_powers_of_ten() {
        assert_eq!(
            log_ticks(30.0, 5000.0),
            [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]
        );
        // Less than a decade: every integer multiple.
        assert_eq!(log_ticks(120.0, 480.0), [200.0, 300.0, 400.0]);
        assert!(log_ticks(0.0, 10.0).is_empty());
        assert_eq!(tick_label(2000.0), "2000");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(0.5), "0.5");
    }

    /// Regression (issue 13, item 12): the legend sat on the data and showed every series as a
    /// plain line. Now it has its own column right of the plot, and a dashed series' entry is
    /// dashed, a multicore series' entry a triangle.
    #[test]
    fn the_legend_has_its_own_column_and_draws_each_series_as_it_is_drawn() {
        let chart = Chart {
            title: "t".into(),
            y_desc: "y".into(),
            log_y: true,
            lines: vec![
                Line {
                    name: "solid-series".into(),
                    points: vec![(0.0, 1000.0), (10.0, 100.0)],
                    color: PALETTE[0],
                    dashed: false,
                    markers_only: false,
                },
                Line {
                    name: "dashed-series".into(),
                    points: vec![(0.0, 900.0), (10.0, 90.0)],
                    color: PALETTE[1],
                    dashed: true,
                    markers_only: false,
                },
                Line {
                    name: "triangle-series".into(),
                    points: vec![(10.0, 50.0)],
                    color: PALETTE[2],
                    markers_only: true,
                    dashed: false,
                },
            ],
        };
        register_font().unwrap();
        let mut svg = String::new();
        draw(
            SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(),
            &chart,
        )
        .unwrap();
        let plot_right = f64::from(SIZE.0 - LEGEND_WIDTH);
        for name in ["solid-series", "dashed-series", "triangle-series"] {
            let at = svg.find(&format!("\n{name}\n</text>")).expect(name);
            let tag = &svg[svg[..at].rfind("<text").unwrap()..at];
            let x: f64 = tag
                .split("x=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{tag}"));
            assert!(x > plot_right, "{name} legend at x={x}, inside the plot");
        }
        // Legend samples: three short dash segments for the dashed series (stroke of its
        // colour), a triangle (polygon) for the markers-only one.
        let red = "#D62728";
        let dashes = svg
            .match_indices("<polyline")
            .filter(|(i, _)| {
                let el = &svg[*i..*i + svg[*i..].find("/>").unwrap()];
                el.contains(red) && el.matches(',').count() == 2
            })
            .count();
        assert!(dashes >= 3, "dashed legend sample: {dashes} segments");
        assert!(svg.contains("<polygon"), "a triangle marker");
    }
}
