//! PNG charts: a grid of line-chart panels, drawn with plotters' bitmap backend and an embedded
//! font (no system fonts needed). [`trace_panels`] turns run traces into loss and
//! hyperparameter panels; other modules build their own [`Panel`]s (e.g. meta-training curves).

use std::path::Path;
use std::sync::OnceLock;

use lhopt_core::Hyperparams;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::env::Trace;
use crate::error::{Error, Result};

/// DejaVu Sans cut down to ASCII and a few symbols; see `assets/fonts/README.md`.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
const FONT_FAMILY: &str = "sans-serif";
const PANEL_WIDTH: u32 = 640;
const PANEL_HEIGHT: u32 = 400;
const TITLE_HEIGHT: u32 = 40;

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Legend entry.
    pub label: String,
    /// `(x, y)` points; non-finite ones (and non-positive ones on a log axis) are left out.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot at every point (for sparse series such as eval losses).
    pub markers: bool,
}

/// One chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines, coloured in order.
    pub lines: Vec<Line>,
}

/// Writes `panels` as a PNG grid with `columns` columns under a `title`.
pub fn write_png(path: &Path, title: &str, panels: &[Panel], columns: usize) -> Result<()> {
    register_embedded_font()?;
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (
        PANEL_WIDTH * columns as u32,
        PANEL_HEIGHT * rows as u32 + TITLE_HEIGHT,
    );
    let drawing_error = |e: &dyn std::fmt::Display| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!("drawing the plot: {e}")),
    };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| drawing_error(&e))?;
    let body = root
        .titled(title, (FONT_FAMILY, 26))
        .map_err(|e| drawing_error(&e))?;
    for (area, panel) in body.split_evenly((rows, columns)).iter().zip(panels) {
        draw_panel(area, panel).map_err(|e| drawing_error(&e))?;
    }
    root.present().map_err(|e| drawing_error(&e))
}

fn register_embedded_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok());
    ok.then_some(()).ok_or_else(|| {
        Error::Usage("the embedded plot font failed to load (a build problem)".into())
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(
    area: &Area<'_>,
    panel: &Panel,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Log axes are drawn as log10 values on a linear axis with labels in the original units.
    let shown = |y: f64| if panel.log_y { y.log10() } else { y };
    let lines: Vec<(&Line, Vec<(f64, f64)>)> = panel
        .lines
        .iter()
        .map(|l| {
            let pts = l
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!panel.log_y || *y > 0.0))
                .map(|&(x, y)| (x, shown(y)))
                .collect();
            (l, pts)
        })
        .collect();
    let all = lines.iter().flat_map(|(_, pts)| pts.iter());
    let (x0, x1, y0, y1) = all.fold(
        (f64::MAX, f64::MIN, f64::MAX, f64::MIN),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (x0, x1) = if x0 < x1 {
        (x0, x1)
    } else {
        (x0.min(0.0), x0.max(0.0) + 1.0)
    };
    let pad = if y0 < y1 { 0.05 * (y1 - y0) } else { 0.5 };
    let (y0, y1) = if y0 <= y1 {
        (y0 - pad, y1 + pad)
    } else {
        (0.0, 1.0)
    };

    let corner = legend_corner(
        lines.iter().map(|(_, pts)| pts.as_slice()),
        (x0, x1, y0, y1),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT_FAMILY, 18))
        .margin(8)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    // Linear axes label their ticks with as many decimals as the tick spacing needs, so
    // neighbouring labels differ; log axes show three significant digits of the value.
    let log_y = panel.log_y;
    let y_decimals = tick_decimals(y0, y1, AXIS_LABELS);
    let y_format = move |v: &f64| {
        if log_y {
            short_number(10f64.powf(*v))
        } else {
            tick_label(*v, y_decimals)
        }
    };
    let x_decimals = tick_decimals(x0, x1, AXIS_LABELS);
    let x_format = move |v: &f64| tick_label(*v, x_decimals);
    chart
        .configure_mesh()
        .x_labels(AXIS_LABELS)
        .y_labels(AXIS_LABELS)
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .y_label_formatter(&y_format)
        .x_label_formatter(&x_format)
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 14))
        .draw()?;
    for (i, (line, pts)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), style))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        if line.markers {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(corner)
        .label_font((FONT_FAMILY, 13))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// The corner of the plot `(x0, x1, y0, y1)` whose quarter (the 40 % of the width and height
/// nearest it) holds the least of the lines, counted at 8 points along every segment so that a
/// long segment counts where it runs: where the legend hides the least. Ties go to the upper
/// right, then upper left, lower right, lower left.
fn legend_corner<'a>(
    lines: impl Iterator<Item = &'a [(f64, f64)]>,
    (x0, x1, y0, y1): (f64, f64, f64, f64),
) -> SeriesLabelPosition {
    let points = lines.flat_map(|pts| {
        let along = pts.windows(2).flat_map(|w| {
            let ((ax, ay), (bx, by)) = (w[0], w[1]);
            (0..8).map(move |k| {
                let t = f64::from(k) / 8.0;
                (ax + t * (bx - ax), ay + t * (by - ay))
            })
        });
        along.chain(pts.last().copied())
    });
    let (near_left, near_right) = (x0 + 0.4 * (x1 - x0), x1 - 0.4 * (x1 - x0));
    let (near_low, near_high) = (y0 + 0.4 * (y1 - y0), y1 - 0.4 * (y1 - y0));
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let (right, left) = (x >= near_right, x <= near_left);
        let (high, low) = (y >= near_high, y <= near_low);
        counts[0] += usize::from(high && right);
        counts[1] += usize::from(high && left);
        counts[2] += usize::from(low && right);
        counts[3] += usize::from(low && left);
    }
    let corners = [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ];
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best].clone()
}

/// Labelled ticks per axis at most.
const AXIS_LABELS: usize = 8;

/// Decimals that tell apart the ticks of `lo..hi` when at most `labels` are drawn: plotters
/// spaces them by a 1, 2 or 5 × 10^k step, at least (hi − lo) / labels.
fn tick_decimals(lo: f64, hi: f64, labels: usize) -> usize {
    let raw = (hi - lo) / labels as f64;
    if !(raw.is_finite() && raw > 0.0) {
        return 2;
    }
    let decade = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&s| s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * decade);
    (-step.log10().floor()).clamp(0.0, 6.0) as usize
}

/// A tick value with `decimals` decimals, in scientific notation when it is very large or small.
fn tick_label(v: f64, decimals: usize) -> String {
    let a = v.abs();
    if a < 1e-12 {
        "0".into()
    } else if a >= 1e5 || decimals > 4 {
        format!("{v:.2e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// Three significant digits, in plain notation where that stays short.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if (1e-2..1e5).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).clamp(0, 4) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.2e}")
    }
}

/// A run to plot: its label, trace and the hyperparameters it started from.
pub struct PlottedRun<'a> {
    /// Legend entry.
    pub label: String,
    /// What was recorded.
    pub trace: &'a Trace,
    /// CIAO's hyperparameters before the first decision (`None`: another optimizer, whose
    /// learning rate is not plotted).
    pub initial: Option<Hyperparams>,
}

/// Panels for a set of runs of one task: training loss (smoothed), eval loss (with `reference`
/// curves, e.g. the best baseline, added), learning rate, and the other hyperparameters of every
/// steered run relative to where it started.
pub fn trace_panels(runs: &[PlottedRun<'_>], reference: Vec<Line>) -> Vec<Panel> {
    let panel = |title: &str, y_label: &str, log_y, lines| Panel {
        title: title.into(),
        x_label: "inner step".into(),
        y_label: y_label.into(),
        log_y,
        lines,
    };
    let train = runs
        .iter()
        .map(|r| Line {
            label: r.label.clone(),
            points: smoothed(&r.trace.train_losses),
            markers: false,
        })
        .collect();
    let eval = runs
        .iter()
        .map(|r| Line {
            label: r.label.clone(),
            points: r.trace.evals.iter().map(|&(s, l)| (s as f64, l)).collect(),
            markers: true,
        })
        .chain(reference)
        .collect();
    let lr = runs
        .iter()
        .filter_map(|r| {
            Some(Line {
                label: r.label.clone(),
                points: hyper_steps(r.trace, r.initial?, |h| h.lr),
                markers: false,
            })
        })
        .collect();
    let mut panels = vec![
        panel("training loss (moving average)", "loss", true, train),
        panel("eval loss", "loss", true, eval),
        panel("learning rate", "lr", true, lr),
    ];
    for (r, initial) in runs
        .iter()
        .filter(|r| !r.trace.decisions.is_empty())
        .filter_map(|r| Some((r, r.initial?)))
    {
        let names = [
            "wd",
            "eps",
            "1-beta1",
            "1-beta2",
            "clip_frac",
            "clip 1-beta",
            "lamb 1-beta",
        ];
        let fields: [fn(&Hyperparams) -> f32; 7] = [
            |h| h.wd,
            |h| h.eps,
            |h| h.ombeta1,
            |h| h.ombeta2,
            |h| h.clip_frac,
            |h| h.clip_ombeta,
            |h| h.lamb_ombeta,
        ];
        let lines = names
            .iter()
            .zip(fields)
            .map(|(name, field)| {
                let start = f64::from(field(&initial));
                let points = hyper_steps(r.trace, initial, field)
                    .into_iter()
                    .map(|(s, v)| (s, (v / start).log2()))
                    .collect();
                Line {
                    label: (*name).into(),
                    points,
                    markers: false,
                }
            })
            .collect();
        panels.push(panel(
            &format!("{}: other hyperparameters", r.label),
            "log2(value / initial)",
            false,
            lines,
        ));
    }
    panels
}

/// The hyperparameter `field` as a step function over inner steps.
fn hyper_steps(
    trace: &Trace,
    initial: Hyperparams,
    field: impl Fn(&Hyperparams) -> f32,
) -> Vec<(f64, f64)> {
    let mut value = f64::from(field(&initial));
    let mut points = vec![(0.0, value)];
    for d in &trace.decisions {
        points.push((d.step as f64, value));
        value = f64::from(field(&d.hyper));
        points.push((d.step as f64, value));
    }
    points.push((trace.train_losses.len() as f64, value));
    points
}

/// Training losses averaged over windows of 1% of the run (at least one step), one point per window.
fn smoothed(losses: &[f32]) -> Vec<(f64, f64)> {
    let window = (losses.len() / 100).max(1);
    losses
        .chunks(window)
        .enumerate()
        .map(|(i, chunk)| {
            let mean = chunk.iter().map(|&l| f64::from(l)).sum::<f64>() / chunk.len() as f64;
            (((i * window) + chunk.len()) as f64, mean)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        use SeriesLabelPosition::{LowerLeft, LowerRight, UpperLeft, UpperRight};
        let range = (0.0, 10.0, 0.0, 10.0);
        let corner = |lines: &[&[(f64, f64)]]| legend_corner(lines.iter().copied(), range);
        let rising: Vec<(f64, f64)> = (0..=10).map(|i| (f64::from(i), f64::from(i))).collect();
        let falling: Vec<(f64, f64)> = rising.iter().map(|&(x, y)| (x, 10.0 - y)).collect();
        assert_eq!(corner(&[&rising]), UpperLeft);
        assert_eq!(corner(&[&falling]), UpperRight);
        assert_eq!(
            corner(&[&[(0.0, 9.0), (10.0, 9.0)], &[(6.0, 1.0), (10.0, 1.0)]]),
            LowerLeft
        );
        // One segment from the upper-left quarter to the middle of the right edge: no vertex
        // lies in the upper-right quarter, but the segment runs through it.
        assert_eq!(corner(&[&[(4.0, 9.9), (10.0, 5.0)]]), LowerRight);
    }

    #[test]
    fn writes_a_png_with_text_and_nan_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.png");
        let line = |label: &str, k: f64| Line {
            label: label.into(),
            points: (0..50)
                .map(|i| (f64::from(i), (-(f64::from(i)) * k).exp()))
                .chain([(51.0, f64::NAN)])
                .collect(),
            markers: true,
        };
        let panels = [
            Panel {
                title: "log".into(),
                x_label: "step".into(),
                y_label: "loss".into(),
                log_y: true,
                lines: vec![line("a", 0.1), line("b", 0.05)],
            },
            Panel {
                title: "empty".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                log_y: false,
                lines: vec![],
            },
        ];
        write_png(&path, "test plot", &panels, 2).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn tick_labels_tell_neighbouring_ticks_apart() {
        // PPO updates 1..24: ticks 5 apart, whole numbers.
        assert_eq!(tick_decimals(1.0, 24.0, 8), 0);
        assert_eq!(tick_label(10.0, 0), "10");
        // An entropy between 11.97 and 12.50: ticks 0.1 apart.
        assert_eq!(tick_decimals(11.97, 12.50, 8), 1);
        assert_eq!(tick_label(12.3, 1), "12.3");
        // A narrow range 12.43..12.45: ticks 0.005 apart.
        assert_eq!(tick_decimals(12.43, 12.45, 8), 3);
        assert_eq!(tick_label(-0.5, 1), "-0.5");
        assert_eq!(tick_label(1e-17, 1), "0");
        assert_eq!(tick_label(2.5e-6, 6), "2.50e-6");
    }

    #[test]
    fn axis_numbers_stay_short() {
        assert_eq!(short_number(500.0), "500");
        assert_eq!(short_number(0.5012), "0.501");
        assert_eq!(short_number(2.512), "2.51");
        assert_eq!(short_number(1.5e-3), "1.50e-3");
        assert_eq!(short_number(0.0), "0");
    }

    #[test]
    fn smoothing_averages_windows() {
        let losses: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let s = smoothed(&losses);
        assert_eq!(s.len(), 100);
        assert_eq!(s[0], (2.0, 0.5));
    }
}
