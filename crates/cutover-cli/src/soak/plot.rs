//! The soak's chart (SVG): call latency (p50 and p99 per window) over time
//! with every cutover and drain completion marked, and below it the share
//! of calls each generation served per window.

use std::path::Path;

use plotters::prelude::*;

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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Write the chart of `o` to `path`.
///
/// # Errors
/// Drawing or writing the file failed.
pub(crate) fn write(path: &Path, o: &Outcome) -> Result<(), BoxError> {
    let root = SVGBackend::new(path, (1200, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(540);
    let secs = o.duration.as_secs_f64();
    let w = o.window.as_secs_f64();

    // Latency per window, in microseconds.
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (i, win) in o.stats.windows.iter().enumerate() {
        if win.latency.is_empty() {
            continue;
        }
        let x = (i as f64 + 0.5) * w;
        p50.push((x, win.latency.value_at_quantile(0.5) as f64 / 1e3));
        p99.push((x, win.latency.value_at_quantile(0.99) as f64 / 1e3));
    }
    let lo = p50.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).max(0.01);
    let hi = p99.iter().map(|p| p.1).fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 { (lo / 2.0, hi * 3.0) } else { (0.1, 1000.0) };
    let title = format!(
        "cutover soak: {} | {} threads | {} calls, {} failed, {} stale | {} reloads",
        o.function,
        o.threads,
        o.stats.calls,
        o.stats.failed,
        o.stats.stale,
        o.reloads.iter().filter(|r| r.error.is_none()).count()
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("call latency (µs, log)")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(err)?;
    for (t, _) in &o.cutovers {
        let x = t.as_secs_f64();
        chart.draw_series(LineSeries::new([(x, lo), (x, hi)], CUTOVER.stroke_width(1))).map_err(err)?;
    }
    if let Some((t, _)) = o.cutovers.first() {
        let x = t.as_secs_f64();
        chart
            .draw_series(LineSeries::new([(x, lo), (x, lo)], CUTOVER.stroke_width(2)))
            .map_err(err)?
            .label("cutover")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], CUTOVER.stroke_width(2)));
    }
    // Drain completions: a marker near the bottom of the chart.
    let drain_y = lo * 1.4;
    let drains = chart
        .draw_series(o.drains.iter().map(|(t, _)| TriangleMarker::new((t.as_secs_f64(), drain_y), 5, DRAIN.filled())))
        .map_err(err)?;
    if !o.drains.is_empty() {
        drains.label("drain completed").legend(|(x, y)| TriangleMarker::new((x + 10, y), 5, DRAIN.filled()));
    }
    chart
        .draw_series(LineSeries::new(p99.iter().copied(), RGBColor(120, 40, 160).stroke_width(2)))
        .map_err(err)?
        .label("p99 per window")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RGBColor(120, 40, 160).stroke_width(2)));
    chart
        .draw_series(LineSeries::new(p50.iter().copied(), BLUE.stroke_width(2)))
        .map_err(err)?
        .label("p50 per window")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    // Share of calls per generation, stacked.
    let mut share = ChartBuilder::on(&bottom)
        .caption(format!(
                "share of calls served by each generation, per {:.0} ms (successive generations of a version alternate dark/light)",
                w * 1e3
            ), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..secs, 0f64..100f64)
        .map_err(err)?;
    share.configure_mesh().x_desc("time (s)").y_desc("% of calls").draw().map_err(err)?;
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
    let mut labelled = vec![false; n_versions as usize];
    for (gi, g) in generations.iter().enumerate().rev() {
        let version = ((g.max(&1) - 1) % n_versions) as usize;
        let (dark, light) = V_COLORS[version % V_COLORS.len()];
        let shade = if (g.max(&1) - 1) / n_versions % 2 == 0 { dark } else { light };
        let points: Vec<(f64, f64)> = cumulative[gi]
            .iter()
            .enumerate()
            .flat_map(|(wi, &v)| [(wi as f64 * w, v), ((wi as f64 + 1.0) * w, v)])
            .collect();
        let series = share.draw_series(AreaSeries::new(points, 0.0, shade.filled())).map_err(err)?;
        if !labelled[version] {
            labelled[version] = true;
            let name = o.versions.get(version).cloned().unwrap_or_default();
            series
                .label(format!("version {}: {name}", version + 1))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], dark.filled()));
        }
    }
    for (t, _) in &o.cutovers {
        let x = t.as_secs_f64();
        share.draw_series(LineSeries::new([(x, 0.0), (x, 100.0)], CUTOVER.mix(0.5).stroke_width(1))).map_err(err)?;
    }
    share
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::error::Error + Send + Sync + 'static>(e: E) -> BoxError {
    Box::new(e)
}
