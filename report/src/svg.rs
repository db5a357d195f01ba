//! The report's charts as inline SVG: win rates with error bars, win rate against average
//! length, and each generator's output lengths against the reference's. Plain strings;
//! every label goes through [`escape`].

use std::fmt::Write as _;

use crate::escape::escape;

/// One generator's numbers as the charts need them.
pub struct ChartPoint<'a> {
    pub name: &'a str,
    pub win_rate: f64,
    pub standard_error: f64,
    pub lc_win_rate: Option<f64>,
    pub lc_standard_error: Option<f64>,
    pub avg_length: f64,
}

const WIN_RATE_COLOR: &str = "#9aa9c7";
const LC_COLOR: &str = "#2f5597";
const FONT: &str = "font-family=\"system-ui, sans-serif\" font-size=\"12\"";

/// A linear axis from 0: a round tick step (1, 2, 2.5 or 5 times a power of ten) giving
/// at most `max_ticks` intervals, and the first multiple of it at or above `max`.
struct Axis {
    max: f64,
    step: f64,
}

impl Axis {
    fn from_zero_to(max: f64, max_ticks: usize) -> Self {
        let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
        let rough = max / max_ticks as f64;
        let magnitude = 10f64.powf(rough.log10().floor());
        let step = [1.0, 2.0, 2.5, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= rough)
            .unwrap_or(10.0 * magnitude);
        Self { max: (max / step).ceil() * step, step }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.max / self.step).round() as usize;
        (0..=n).map(move |i| i as f64 * self.step)
    }
}

/// Horizontal bars, two per generator (LC win rate, win rate), each with a ±1 SE whisker.
pub fn win_rate_bars(points: &[ChartPoint]) -> String {
    let label_width = 220.0;
    let plot_width = 820.0;
    let row_height = 34.0;
    let top = 30.0;
    let height = top + row_height * points.len() as f64 + 40.0;
    let width = label_width + plot_width + 30.0;
    let max = points
        .iter()
        .flat_map(|p| {
            [
                p.win_rate + p.standard_error,
                p.lc_win_rate.unwrap_or(0.0) + p.lc_standard_error.unwrap_or(0.0),
            ]
        })
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // Always up to 50% at least: the reference's own level is the point of comparison.
    let axis = Axis::from_zero_to(max.clamp(50.0, 100.0), 10);
    let axis_max = axis.max;
    let x = |v: f64| label_width + plot_width * (v / axis_max).clamp(0.0, 1.0);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="win rates with standard errors" {FONT}>"#
    );
    let bottom = top + row_height * points.len() as f64;
    for value in axis.ticks() {
        let tx = x(value);
        let label = tick_label(value);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{bottom}" stroke="#e3e3e3"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{label}%</text>"##,
            bottom + 16.0
        );
    }
    let fifty = x(50.0);
    let _ = write!(
        svg,
        r##"<line x1="{fifty:.1}" y1="{top}" x2="{fifty:.1}" y2="{bottom}" stroke="#b33" stroke-dasharray="4 3"/>"##
    );
    for (i, p) in points.iter().enumerate() {
        let y0 = top + row_height * i as f64;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#222">{}</text>"##,
            label_width - 8.0,
            y0 + row_height / 2.0 + 4.0,
            escape(&truncate(p.name, 32))
        );
        let mut bar = |y: f64, value: Option<f64>, se: Option<f64>, color: &str, what: &str| {
            let Some(value) = value.filter(|v| v.is_finite()) else { return };
            let _ = write!(
                svg,
                r#"<rect x="{label_width}" y="{y:.1}" width="{:.1}" height="11" fill="{color}"><title>{}: {what} {value:.2}</title></rect>"#,
                x(value) - label_width,
                escape(p.name)
            );
            if let Some(se) = se.filter(|s| s.is_finite() && *s > 0.0) {
                let (lo, hi, mid) = (x(value - se), x(value + se), y + 5.5);
                let _ = write!(
                    svg,
                    r##"<path d="M{lo:.1} {mid:.1}H{hi:.1}M{lo:.1} {:.1}V{:.1}M{hi:.1} {:.1}V{:.1}" stroke="#111" stroke-width="1.2" fill="none"/>"##,
                    mid - 4.0,
                    mid + 4.0,
                    mid - 4.0,
                    mid + 4.0
                );
            }
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#333" font-size="10">{value:.1}</text>"##,
                x(value + se.unwrap_or(0.0).max(0.0)) + 5.0,
                y + 9.5
            );
        };
        bar(y0 + 5.0, p.lc_win_rate, p.lc_standard_error, LC_COLOR, "LC win rate");
        bar(y0 + 18.0, Some(p.win_rate), Some(p.standard_error), WIN_RATE_COLOR, "win rate");
    }
    legend(&mut svg, label_width, 14.0);
    svg.push_str("</svg>");
    svg
}

fn legend(svg: &mut String, x: f64, y: f64) {
    let _ = write!(
        svg,
        r##"<rect x="{x}" y="{:.1}" width="12" height="10" fill="{LC_COLOR}"/><text x="{:.1}" y="{y}" fill="#222">length-controlled win rate</text><rect x="{:.1}" y="{:.1}" width="12" height="10" fill="{WIN_RATE_COLOR}"/><text x="{:.1}" y="{y}" fill="#222">win rate</text><text x="{:.1}" y="{y}" fill="#555">whiskers: ±1 standard error</text>"##,
        y - 9.0,
        x + 16.0,
        x + 190.0,
        y - 9.0,
        x + 206.0,
        x + 290.0
    );
}

/// Win rate (filled) and LC win rate (ring) against average output length, joined by a
/// line per generator: how much of the win rate the length correction takes away.
pub fn length_scatter(points: &[ChartPoint]) -> String {
    let (left, right, top, bottom) = (60.0, 90.0, 30.0, 50.0);
    let (plot_width, plot_height) = (980.0, 420.0);
    let width = left + plot_width + right;
    let height = top + plot_height + bottom;
    let max_length =
        points.iter().map(|p| p.avg_length).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let x_axis = Axis::from_zero_to(max_length * 1.05, 10);
    let x_max = x_axis.max;
    let max_rate = points
        .iter()
        .flat_map(|p| [p.win_rate, p.lc_win_rate.unwrap_or(0.0)])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_axis = Axis::from_zero_to((max_rate * 1.05).clamp(10.0, 100.0), 8);
    let y_max = y_axis.max;
    let x = |v: f64| left + plot_width * (v / x_max).clamp(0.0, 1.0);
    let y = |v: f64| top + plot_height * (1.0 - (v / y_max).clamp(0.0, 1.0));

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="win rate against average length" {FONT}>"#
    );
    for vx in x_axis.ticks() {
        let tx = x(vx);
        let _ = write!(
            svg,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{:.1}" stroke="#eee"/><text x="{tx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            top + plot_height,
            top + plot_height + 16.0,
            tick_label(vx)
        );
    }
    for vy in y_axis.ticks() {
        let ty = y(vy);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}%</text>"##,
            left + plot_width,
            left - 6.0,
            ty + 4.0,
            tick_label(vy)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#999"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#222">average output length (characters)</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle" fill="#222">win rate</text>"##,
        left + plot_width / 2.0,
        height - 12.0,
        top + plot_height / 2.0
    );
    let mut labels = Vec::new();
    let mut markers = Vec::new();
    for p in points {
        if !p.avg_length.is_finite() || !p.win_rate.is_finite() {
            continue;
        }
        let px = x(p.avg_length);
        let (wy, name) = (y(p.win_rate), escape(p.name));
        if let Some(lc) = p.lc_win_rate.filter(|v| v.is_finite()) {
            let ly = y(lc);
            markers.push((px, ly));
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{wy:.1}" x2="{px:.1}" y2="{ly:.1}" stroke="{LC_COLOR}" stroke-opacity="0.5"/><circle cx="{px:.1}" cy="{ly:.1}" r="5" fill="white" stroke="{LC_COLOR}" stroke-width="2"><title>{name}: LC win rate {lc:.2}, length {:.0}</title></circle>"##,
                p.avg_length
            );
        }
        markers.push((px, wy));
        labels.push((px, wy, truncate(p.name, 28)));
        let _ = write!(
            svg,
            r##"<circle cx="{px:.1}" cy="{wy:.1}" r="5" fill="{WIN_RATE_COLOR}" stroke="#333"><title>{name}: win rate {:.2}, length {:.0}</title></circle>"##,
            p.win_rate, p.avg_length,
        );
    }
    let area = Rect { x0: left, y0: top, x1: width - 4.0, y1: top + plot_height };
    for (label, placed) in labels.iter().zip(place_labels(&labels, &markers, area)) {
        let (px, py, text) = label;
        let Some(spot) = placed else { continue };
        if spot.moved {
            let to_x = if spot.anchor_end { spot.x + 2.0 } else { spot.x - 2.0 };
            let _ = write!(
                svg,
                r##"<line x1="{px:.1}" y1="{py:.1}" x2="{to_x:.1}" y2="{:.1}" stroke="#999" stroke-width="0.8"/>"##,
                spot.y - 4.0
            );
        }
        let anchor = if spot.anchor_end { "end" } else { "start" };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" fill="#222">{}</text>"##,
            spot.x,
            spot.y,
            escape(text)
        );
    }
    let _ = write!(
        svg,
        r##"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{WIN_RATE_COLOR}" stroke="#333"/><text x="{:.1}" y="{:.1}" fill="#222">win rate</text><circle cx="{:.1}" cy="{:.1}" r="5" fill="white" stroke="{LC_COLOR}" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="#222">length-controlled win rate</text>"##,
        left + 10.0,
        top - 14.0,
        left + 20.0,
        top - 10.0,
        left + 100.0,
        top - 14.0,
        left + 110.0,
        top - 10.0
    );
    svg.push_str("</svg>");
    svg
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn overlaps(&self, other: &Rect) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }

    fn inside(&self, area: &Rect) -> bool {
        self.x0 >= area.x0 && self.x1 <= area.x1 && self.y0 >= area.y0 && self.y1 <= area.y1
    }
}

/// Where a point's label goes: its text position, whether it is right-aligned (left of
/// the point) and whether it left its natural spot (then a leader line joins them).
#[derive(Debug, Clone, Copy)]
struct LabelSpot {
    x: f64,
    y: f64,
    anchor_end: bool,
    moved: bool,
}

/// Greedy label placement for the 12px labels: right of the point if free, else nudged
/// up or down, else to the left; a label that fits nowhere is left out (the point's
/// tooltip still names it). Labels are placed top to bottom.
fn place_labels(
    labels: &[(f64, f64, String)],
    markers: &[(f64, f64)],
    area: Rect,
) -> Vec<Option<LabelSpot>> {
    const CHAR_WIDTH: f64 = 6.6;
    const STEP: f64 = 13.0;
    let obstacles: Vec<Rect> = markers
        .iter()
        .map(|&(x, y)| Rect { x0: x - 6.0, y0: y - 6.0, x1: x + 6.0, y1: y + 6.0 })
        .collect();
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| labels[a].1.total_cmp(&labels[b].1));
    let mut taken: Vec<Rect> = Vec::new();
    let mut spots = vec![None; labels.len()];
    for i in order {
        let (px, py, text) = &labels[i];
        let text_width = text.chars().count() as f64 * CHAR_WIDTH;
        let shifts = (0..8).flat_map(|k| {
            if k == 0 {
                vec![0.0]
            } else {
                vec![k as f64 * STEP, -(k as f64) * STEP]
            }
        });
        let candidates = shifts.flat_map(|dy| [(false, dy), (true, dy)]);
        for (anchor_end, dy) in candidates {
            let baseline = py + 4.0 + dy;
            let x = if anchor_end { px - 8.0 } else { px + 8.0 };
            let (x0, x1) = if anchor_end { (x - text_width, x) } else { (x, x + text_width) };
            let bounds = Rect { x0, y0: baseline - 10.0, x1, y1: baseline + 3.0 };
            let clear = bounds.inside(&area)
                && !taken.iter().any(|t| t.overlaps(&bounds))
                && !obstacles.iter().any(|o| o.overlaps(&bounds));
            if clear {
                taken.push(bounds);
                spots[i] = Some(LabelSpot { x, y: baseline, anchor_end, moved: dy != 0.0 });
                break;
            }
        }
    }
    spots
}

fn tick_label(value: f64) -> String {
    if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

/// Upper bounds (characters, exclusive) of the length histogram's bins; the last bin is
/// open.
const LENGTH_BINS: [usize; 8] = [1, 250, 500, 1000, 1500, 2000, 3000, 4000];
const REFERENCE_COLOR: &str = "#c9c9c9";

/// How many of `lengths` fall in each bin of [`LENGTH_BINS`] (plus the open last bin).
pub fn length_bins(lengths: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; LENGTH_BINS.len() + 1];
    for &len in lengths {
        counts[LENGTH_BINS.iter().position(|&upper| len < upper).unwrap_or(LENGTH_BINS.len())] += 1;
    }
    counts
}

fn bin_label(i: usize) -> String {
    match i {
        0 => "empty".into(),
        i if i == LENGTH_BINS.len() => format!("{}+", LENGTH_BINS[i - 1]),
        i => format!("{}–{}", LENGTH_BINS[i - 1], LENGTH_BINS[i] - 1),
    }
}

/// Side-by-side bars per length bin: the generator's answers and the reference's answers
/// to the same instructions (characters).
pub fn length_histogram(name: &str, model: &[usize], reference: &[usize]) -> String {
    let (model, reference) = (length_bins(model), length_bins(reference));
    let (left, top, bin_width, plot_height) = (50.0, 26.0, 92.0, 150.0);
    let width = left + bin_width * model.len() as f64 + 20.0;
    let height = top + plot_height + 44.0;
    let axis =
        Axis::from_zero_to(model.iter().chain(&reference).copied().max().unwrap_or(1) as f64, 5);
    let y = |count: f64| top + plot_height * (1.0 - count / axis.max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="output lengths of {} and of the reference" {FONT}>"#,
        escape(name)
    );
    for tick in axis.ticks() {
        let ty = y(tick);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
            width - 20.0,
            left - 6.0,
            ty + 4.0,
            tick_label(tick)
        );
    }
    for (i, (&m, &r)) in model.iter().zip(&reference).enumerate() {
        let x0 = left + bin_width * i as f64 + 8.0;
        for (dx, count, color, who) in
            [(0.0, m, LC_COLOR, escape(name)), (36.0, r, REFERENCE_COLOR, "reference".into())]
        {
            let top_y = y(count as f64);
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{top_y:.1}" width="34" height="{:.1}" fill="{color}"><title>{who}: {count} answers of {}</title></rect>"#,
                x0 + dx,
                (top + plot_height - top_y).max(0.0),
                bin_label(i)
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            x0 + 35.0,
            top + plot_height + 16.0,
            bin_label(i)
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="6" width="12" height="10" fill="{LC_COLOR}"/><text x="{:.1}" y="15" fill="#222">{}</text><rect x="{:.1}" y="6" width="12" height="10" fill="{REFERENCE_COLOR}"/><text x="{:.1}" y="15" fill="#222">reference</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">answer length (characters)</text>"##,
        left + 16.0,
        escape(&truncate(name, 40)),
        left + 300.0,
        left + 316.0,
        left + bin_width * model.len() as f64 / 2.0,
        top + plot_height + 36.0
    );
    svg.push_str("</svg>");
    svg
}

const JUDGING_COLOR: &str = "#c55a11";

/// Results stored over time in each phase (a [`herd_core::throughput::Timeline`]): the
/// slope is the throughput, a flat stretch a pause.
pub fn timeline_chart(name: &str, generation: &[[f64; 2]], judging: &[[f64; 2]]) -> String {
    let (left, right, top, bottom) = (60.0, 30.0, 28.0, 44.0);
    let (plot_width, plot_height) = (520.0, 170.0);
    let (width, height) = (left + plot_width + right, top + plot_height + bottom);
    let all = || generation.iter().chain(judging);
    let x_axis = Axis::from_zero_to(all().map(|p| p[0]).fold(0.0, f64::max), 6);
    let y_axis = Axis::from_zero_to(all().map(|p| p[1]).fold(0.0, f64::max), 5);
    let x = |v: f64| left + plot_width * (v / x_axis.max);
    let y = |v: f64| top + plot_height * (1.0 - v / y_axis.max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="progress over time of {}" {FONT}>"#,
        escape(name)
    );
    for tick in x_axis.ticks() {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#555">{3}</text>"##,
            x(tick),
            top + plot_height,
            top + plot_height + 16.0,
            tick_label(tick)
        );
    }
    for tick in y_axis.ticks() {
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#eee"/><text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#555">{4}</text>"##,
            y(tick),
            left + plot_width,
            left - 6.0,
            y(tick) + 4.0,
            tick_label(tick)
        );
    }
    for (points, color, what) in
        [(generation, LC_COLOR, "answers"), (judging, JUDGING_COLOR, "verdicts")]
    {
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> =
            points.iter().map(|p| format!("{:.1},{:.1}", x(p[0]), y(p[1]))).collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"><title>{what} stored over time</title></polyline>"#,
            path.join(" ")
        );
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="6" width="12" height="10" fill="{LC_COLOR}"/><text x="{:.1}" y="15" fill="#222">answers (generation)</text><rect x="{:.1}" y="6" width="12" height="10" fill="{JUDGING_COLOR}"/><text x="{:.1}" y="15" fill="#222">verdicts (judging)</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">seconds since the phase started</text>"##,
        left + 16.0,
        left + 170.0,
        left + 186.0,
        left + plot_width / 2.0,
        top + plot_height + 36.0
    );
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::{length_bins, length_histogram, Axis};

    #[test]
    fn lengths_fall_in_their_bins() {
        assert_eq!(length_bins(&[0, 1, 249, 250, 3999, 4000, 10_000]), [1, 2, 1, 0, 0, 0, 0, 1, 2]);
        let svg = length_histogram("<m>", &[0, 300], &[2000, 2100]);
        assert!(svg.contains("&lt;m&gt;: 1 answers of empty") && !svg.contains("<m>"));
        assert!(svg.contains("reference: 2 answers of 2000–2999"));
    }

    #[test]
    fn axes_end_on_a_round_tick_just_above_the_data() {
        let rates = Axis::from_zero_to(27.7, 10);
        assert_eq!((rates.step, rates.max), (5.0, 30.0));
        assert_eq!(rates.ticks().count(), 7);
        let lengths = Axis::from_zero_to(1150.8, 10);
        assert_eq!((lengths.step, lengths.max), (200.0, 1200.0));
        let small = Axis::from_zero_to(12.0, 8);
        assert_eq!((small.step, small.max), (2.0, 12.0));
    }
}
