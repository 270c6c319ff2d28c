//! The soak's chart (SVG), three panels over one time axis, each with its
//! legend in a column to the right (never over the data):
//!
//! 1. call latency per window (p50, p99 and max; log scale, one gridline per
//!    decade) with every cutover as a red line, and the run's slowest call
//!    marked and labelled;
//! 2. an event lane: each cutover, and each drain from its cutover to its
//!    completion (time only: a drain has no latency to plot against);
//! 3. the share of calls each generation served per window.

use std::path::Path;

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::Outcome;

/// Per version: the colour of its odd and of its even generations.
const V_COLORS: [(RGBColor, RGBColor); 4] = [
    (RGBColor(66, 133, 244), RGBColor(150, 190, 250)),
    (RGBColor(245, 130, 0), RGBColor(255, 195, 120)),
    (RGBColor(52, 168, 83), RGBColor(150, 215, 165)),
    (RGBColor(171, 71, 188), RGBColor(215, 160, 225)),
];
const CUTOVER: RGBColor = RGBColor(220, 40, 40);
const DRAIN: RGBColor = RGBColor(20, 150, 60);
const P50: RGBColor = RGBColor(0, 0, 255);
const P99: RGBColor = RGBColor(120, 40, 160);
const MAX: RGBColor = RGBColor(205, 175, 225);
const RUN_MAX: RGBColor = RGBColor(0, 0, 0);
const GRID: RGBColor = RGBColor(225, 225, 225);

/// Canvas and layout, in pixels.
const WIDTH: u32 = 1200;
const LEGEND_WIDTH: u32 = 250;
const LATENCY_HEIGHT: u32 = 500;
const LANE_HEIGHT: u32 = 110;
const SHARE_HEIGHT: u32 = 290;
/// The same on every panel, so their time axes line up.
const Y_LABEL_AREA: u32 = 80;
const MARGIN: u32 = 12;
/// Axis labels, the same size on every panel.
const LABELS: (&str, u32) = ("sans-serif", 13);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A legend entry's symbol.
enum Mark {
    Line(RGBColor, u32),
    Triangle(RGBColor),
    Dot(RGBColor),
    Box(RGBColor, RGBColor),
}

/// Write the chart of `o` to `path`.
///
/// # Errors
/// Drawing or writing the file failed.
pub(crate) fn write(path: &Path, o: &Outcome) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (WIDTH, LATENCY_HEIGHT + LANE_HEIGHT + SHARE_HEIGHT + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_ns = o.stats.latency.max();
    let title = format!(
        "cutover soak: {} | {} threads | {} calls, {} failed, {} stale | {} reloads | slowest call {}",
        o.function,
        o.threads,
        o.stats.calls,
        o.stats.failed,
        o.stats.stale,
        o.reloads.iter().filter(|r| r.error.is_none()).count(),
        human(max_ns as f64 / 1e3),
    );
    let root = root.titled(&title, ("sans-serif", 20)).map_err(err)?;
    let (latency, rest) = root.split_vertically(LATENCY_HEIGHT);
    let (lane, share) = rest.split_vertically(LANE_HEIGHT);
    latency_panel(&latency, o)?;
    event_lane(&lane, o)?;
    share_panel(&share, o)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Latency per window, log scale, with cutovers and the slowest call.
fn latency_panel(area: &Area<'_>, o: &Outcome) -> Result<(), BoxError> {
    let (plot, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let secs = o.duration.as_secs_f64();
    let w = o.window.as_secs_f64();

    // Per window, in microseconds.
    let (mut p50, mut p99, mut max) = (Vec::new(), Vec::new(), Vec::new());
    let mut slowest: Option<(f64, f64)> = None;
    for (i, win) in o.stats.windows.iter().enumerate() {
        if win.latency.is_empty() {
            continue;
        }
        let x = (i as f64 + 0.5) * w;
        p50.push((x, win.latency.value_at_quantile(0.5) as f64 / 1e3));
        p99.push((x, win.latency.value_at_quantile(0.99) as f64 / 1e3));
        let m = win.latency.max() as f64 / 1e3;
        max.push((x, m));
        if slowest.is_none_or(|(_, s)| m > s) {
            slowest = Some((x, m));
        }
    }
    // Whole decades, from below the lowest p50 to above the slowest call.
    let low = p50.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let high = max.iter().map(|p| p.1).fold(0.0, f64::max).max(o.stats.latency.max() as f64 / 1e3);
    let (lo, hi) = if low.is_finite() && low > 0.0 && high > 0.0 {
        (10f64.powf(low.log10().floor()), 10f64.powf((high * 1.5).log10().ceil()))
    } else {
        (0.1, 1000.0)
    };
    let decades = (hi / lo).log10().round().max(1.0) as usize;
    // Few decades: label 1..9 within each; many: the decades only.
    let y_labels = if decades <= 2 { 10 * decades } else { decades };

    let mut chart = ChartBuilder::on(&plot)
        .margin(MARGIN)
        .x_label_area_size(36)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f64..secs, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .label_style(LABELS)
        .x_desc("time (s)")
        .y_desc("call latency (log)")
        .y_labels(y_labels)
        .y_label_formatter(&|v| human(*v))
        .bold_line_style(GRID)
        // Minor gridlines on a log axis crowd into a solid band: none.
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    for (t, _) in &o.cutovers {
        let x = t.as_secs_f64();
        chart.draw_series(LineSeries::new([(x, lo), (x, hi)], CUTOVER.mix(0.6).stroke_width(1))).map_err(err)?;
    }
    chart.draw_series(LineSeries::new(max.iter().copied(), MAX.stroke_width(1))).map_err(err)?;
    chart.draw_series(LineSeries::new(p99.iter().copied(), P99.stroke_width(2))).map_err(err)?;
    chart.draw_series(LineSeries::new(p50.iter().copied(), P50.stroke_width(2))).map_err(err)?;
    // The window holding the slowest call, at the call's exact latency (the
    // per-window histograms keep 2 significant digits, the run's 3).
    let run_max = o.stats.latency.max() as f64 / 1e3;
    if let Some((x, _)) = slowest {
        let m = run_max;
        chart.draw_series([Circle::new((x, m), 5, RUN_MAX.filled())]).map_err(err)?;
        // Label to the left of the point in the right half, else to the right.
        let right_half = x > secs / 2.0;
        let pos = Pos::new(if right_half { HPos::Right } else { HPos::Left }, VPos::Center);
        let style = TextStyle::from(("sans-serif", 14).into_font()).color(&RUN_MAX).pos(pos);
        let dx = if right_half { -10 } else { 10 };
        let label = format!("slowest call: {} (window at {:.2} s)", human(m), x);
        chart.draw_series([EmptyElement::at((x, m)) + Text::new(label, (dx, 0), style)]).map_err(err)?;
    }
    legend(
        &legend_area,
        "call latency, per window",
        &[
            (Mark::Line(P99, 2), "p99".to_owned()),
            (Mark::Line(P50, 2), "p50".to_owned()),
            (Mark::Line(MAX, 1), "max".to_owned()),
            (Mark::Dot(RUN_MAX), format!("slowest call: {}", human(run_max))),
            (Mark::Line(CUTOVER, 1), "cutover".to_owned()),
        ],
    )
}

/// Cutovers and drains on a time-only lane.
fn event_lane(area: &Area<'_>, o: &Outcome) -> Result<(), BoxError> {
    let (plot, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let secs = o.duration.as_secs_f64();
    let mut lane = ChartBuilder::on(&plot)
        .margin(MARGIN)
        .x_label_area_size(30)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f64..secs, 0f64..2f64)
        .map_err(err)?;
    lane.configure_mesh()
        .disable_y_mesh()
        .label_style(LABELS)
        .y_labels(5)
        .y_label_formatter(&|y| match (y * 2.0).round() as i64 {
            3 => "cutover".to_owned(),
            1 => "drain".to_owned(),
            _ => String::new(),
        })
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    for (t, _) in &o.cutovers {
        let x = t.as_secs_f64();
        lane.draw_series(LineSeries::new([(x, 1.2), (x, 1.8)], CUTOVER.stroke_width(2))).map_err(err)?;
    }
    // Each drain: a bar from its cutover (to the generation after the one
    // drained) to its completion, and a triangle at the completion.
    for (t, drained) in &o.drains {
        let end = t.as_secs_f64();
        let start = o.cutovers.iter().find(|(_, g)| *g == drained + 1).map_or(end, |(c, _)| c.as_secs_f64());
        lane.draw_series(LineSeries::new([(start, 0.5), (end, 0.5)], DRAIN.stroke_width(3))).map_err(err)?;
        lane.draw_series([TriangleMarker::new((end, 0.5), 5, DRAIN.filled())]).map_err(err)?;
    }
    legend(
        &legend_area,
        "reloads",
        &[
            (Mark::Line(CUTOVER, 2), format!("cutover ({})", o.cutovers.len())),
            (Mark::Triangle(DRAIN), format!("drain completed ({})", o.drains.len())),
        ],
    )
}

/// The share of calls each generation served, stacked, per window.
fn share_panel(area: &Area<'_>, o: &Outcome) -> Result<(), BoxError> {
    let (plot, legend_area) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let secs = o.duration.as_secs_f64();
    let w = o.window.as_secs_f64();
    let mut share = ChartBuilder::on(&plot)
        .margin(MARGIN)
        .x_label_area_size(36)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0f64..secs, 0f64..100f64)
        .map_err(err)?;
    share
        .configure_mesh()
        .label_style(LABELS)
        .x_desc("time (s)")
        .y_desc("% of calls")
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    let generations: Vec<u64> = o.stats.per_generation.keys().copied().collect();
    let n_versions = o.versions.len().max(1) as u64;
    // cumulative[g_index][window] = share of generations up to and including g.
    let windows = &o.stats.windows;
    let mut cumulative = vec![vec![0.0f64; windows.len()]; generations.len()];
    for (wi, win) in windows.iter().enumerate() {
        let total: u64 = win.generations.iter().map(|(_, n)| n).sum();
        if total == 0 {
            continue;
        }
        let mut acc = 0.0;
        for (gi, g) in generations.iter().enumerate() {
            let n = win.generations.iter().find(|(h, _)| h == g).map_or(0, |(_, n)| *n);
            acc += n as f64 * 100.0 / total as f64;
            cumulative[gi][wi] = acc;
        }
    }
    for (gi, g) in generations.iter().enumerate().rev() {
        let version = ((g.max(&1) - 1) % n_versions) as usize;
        let (dark, light) = V_COLORS[version % V_COLORS.len()];
        let shade = if ((g.max(&1) - 1) / n_versions).is_multiple_of(2) { dark } else { light };
        let points: Vec<(f64, f64)> = cumulative[gi]
            .iter()
            .enumerate()
            .flat_map(|(wi, &v)| [(wi as f64 * w, v), ((wi as f64 + 1.0) * w, v)])
            .collect();
        share.draw_series(AreaSeries::new(points, 0.0, shade.filled())).map_err(err)?;
    }
    for (t, _) in &o.cutovers {
        let x = t.as_secs_f64();
        share.draw_series(LineSeries::new([(x, 0.0), (x, 100.0)], CUTOVER.mix(0.5).stroke_width(1))).map_err(err)?;
    }
    let mut entries: Vec<(Mark, String)> = o
        .versions
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (dark, light) = V_COLORS[i % V_COLORS.len()];
            (Mark::Box(dark, light), format!("v{}: {name}", i + 1))
        })
        .collect();
    entries.push((Mark::Line(CUTOVER, 1), "cutover".to_owned()));
    legend(&legend_area, &format!("calls per generation, per {:.0} ms", w * 1e3), &entries)?;
    let note = if o.versions.len() == 1 {
        "one version: each reload loads it again".to_owned()
    } else {
        "a version's successive generations: dark, light".to_owned()
    };
    let y = 30 + 24 * (entries.len() as i32 + 1);
    legend_area
        .draw(&Text::new(note, (8, y), ("sans-serif", 12).into_font().color(&RGBColor(90, 90, 90))))
        .map_err(err)?;
    Ok(())
}

/// A legend: a heading, then one symbol and text per line, top left of `area`.
fn legend(area: &Area<'_>, heading: &str, entries: &[(Mark, String)]) -> Result<(), BoxError> {
    let text = ("sans-serif", 14).into_font();
    area.draw(&Text::new(heading.to_owned(), (8, 18), ("sans-serif", 14).into_font().style(FontStyle::Bold)))
        .map_err(err)?;
    for (i, (mark, label)) in entries.iter().enumerate() {
        let y = 46 + 24 * i as i32;
        match mark {
            Mark::Line(color, width) => {
                area.draw(&PathElement::new([(8, y), (32, y)], color.stroke_width(*width))).map_err(err)?
            }
            Mark::Triangle(color) => area.draw(&TriangleMarker::new((20, y), 5, color.filled())).map_err(err)?,
            Mark::Dot(color) => area.draw(&Circle::new((20, y), 5, color.filled())).map_err(err)?,
            Mark::Box(dark, light) => {
                area.draw(&Rectangle::new([(8, y - 6), (20, y + 6)], dark.filled())).map_err(err)?;
                area.draw(&Rectangle::new([(20, y - 6), (32, y + 6)], light.filled())).map_err(err)?;
            }
        }
        let style = TextStyle::from(text.clone()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label.clone(), (40, y), style)).map_err(err)?;
    }
    Ok(())
}

/// A latency given in microseconds, in the unit that reads best.
fn human(us: f64) -> String {
    let (value, unit) = match us {
        v if v < 1.0 => (v * 1e3, "ns"),
        v if v < 1e3 => (v, "µs"),
        v if v < 1e6 => (v / 1e3, "ms"),
        v => (v / 1e6, "s"),
    };
    let digits = if value >= 100.0 || value.fract().abs() < 1e-9 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{value:.digits$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    format!("{s} {unit}")
}

fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(human(0.25), "250 ns");
        assert_eq!(human(1.0), "1 µs");
        assert_eq!(human(2.5), "2.5 µs");
        assert_eq!(human(10.0), "10 µs");
        assert_eq!(human(1_000.0), "1 ms");
        assert_eq!(human(20_100.0), "20.1 ms");
        assert_eq!(human(3_000_000.0), "3 s");
    }
}
