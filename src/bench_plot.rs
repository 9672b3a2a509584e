//! `paxosctl bench --plot`: a run second by second, as a self-contained
//! SVG in the style of `timeline`: throughput (and errors, if any) per
//! second above, the p50 and p99 latency of each second below on a log
//! scale. A second in which no operation succeeded has no latency: its
//! lines break there.

use crate::bench::Second;
use crate::timeline::escape;
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 640.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Space between the two panels, for the upper one's time labels.
const GAP: f64 = 40.0;
/// The height of each panel.
const PANEL: f64 = (HEIGHT - TOP - BOTTOM - GAP) / 2.0;
/// Horizontal lines (and labels) of the throughput panel, above zero.
const THROUGHPUT_TICKS: u32 = 4;
/// The tops a linear axis may have, times a power of ten: each divides
/// into `THROUGHPUT_TICKS` round steps, and the highest value reaches at
/// least three quarters of the way up.
const LINEAR_TOPS: [f64; 11] = [1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];
/// The smallest latency the log scale goes down to, so a 0 cannot reach
/// the logarithm.
const LATENCY_MS_MIN: f64 = 0.001;

const OPS_COLOR: &str = "#1f77b4";
const ERRORS_COLOR: &str = "#d62728";
const P50_COLOR: &str = "#1b9e77";
const P99_COLOR: &str = "#ff7f0e";

/// How values map to a panel's height.
#[derive(Clone, Copy, Debug)]
enum Axis {
    /// 0 to `max`.
    Linear { max: f64 },
    /// `min` to `max`, both powers of ten.
    Log { min: f64, max: f64 },
}

impl Axis {
    /// Zero to the first of `LINEAR_TOPS` times a power of ten at or above
    /// `max`.
    fn linear(max: f64) -> Axis {
        let max = max.max(1.0);
        let decade = 10f64.powf(max.log10().floor());
        let top = LINEAR_TOPS.into_iter().find(|m| m * decade >= max).unwrap_or(10.0);
        Axis::Linear { max: top * decade }
    }

    /// The decades around every value; one decade when there is none.
    fn log(values: impl Iterator<Item = f64>) -> Axis {
        let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if hi > 0.0 { (lo.max(LATENCY_MS_MIN), hi.max(LATENCY_MS_MIN)) } else { (1.0, 1.0) };
        let min = 10f64.powf(lo.log10().floor());
        let max = 10f64.powf(hi.log10().ceil()).max(min * 10.0);
        Axis::Log { min, max }
    }

    /// Where `value` sits, from 0 (bottom) to 1 (top).
    fn fraction(self, value: f64) -> f64 {
        match self {
            Axis::Linear { max } => (value / max).clamp(0.0, 1.0),
            Axis::Log { min, max } => {
                let v = value.clamp(min, max);
                (v.log10() - min.log10()) / (max.log10() - min.log10())
            }
        }
    }

    /// The values of the horizontal lines, with their labels.
    fn ticks(self) -> Vec<(f64, String)> {
        match self {
            Axis::Linear { max } => (0..=THROUGHPUT_TICKS)
                .map(|i| max * f64::from(i) / f64::from(THROUGHPUT_TICKS))
                .map(|v| (v, format!("{v:.0}")))
                .collect(),
            Axis::Log { min, max } => {
                let decades = (max / min).log10().round() as i32;
                (0..=decades).map(|d| min * 10f64.powi(d)).map(|v| (v, format!("{v} ms"))).collect()
            }
        }
    }
}

/// One panel: its top edge and its axis.
struct Panel {
    top: f64,
    axis: Axis,
}

impl Panel {
    fn y(&self, value: f64) -> f64 {
        self.top + PANEL - self.axis.fraction(value) * PANEL
    }
}

/// One line: a value per second, `None` where it has none.
struct Series {
    label: &'static str,
    color: &'static str,
    values: Vec<Option<f64>>,
}

/// The middle of second `i` of `n`.
fn x(i: usize, n: usize) -> f64 {
    LEFT + (i as f64 + 0.5) / n.max(1) as f64 * (WIDTH - LEFT - RIGHT)
}

/// Renders the SVG.
pub fn render(title: &str, seconds: &[Second]) -> String {
    let count = |f: fn(&Second) -> u64| seconds.iter().map(|s| Some(f(s) as f64)).collect();
    let latency =
        |f: fn(&Second) -> u64| seconds.iter().map(|s| (s.ops > 0).then(|| f(s) as f64 / 1000.0)).collect();
    let mut rates = vec![Series { label: "ops/s", color: OPS_COLOR, values: count(|s| s.ops) }];
    if seconds.iter().any(|s| s.errors > 0) {
        rates.push(Series { label: "errors/s", color: ERRORS_COLOR, values: count(|s| s.errors) });
    }
    let latencies = [
        Series { label: "p50 latency", color: P50_COLOR, values: latency(|s| s.p50_us) },
        Series { label: "p99 latency", color: P99_COLOR, values: latency(|s| s.p99_us) },
    ];
    let highest = |series: &[Series]| {
        series.iter().flat_map(|s| s.values.iter().flatten().copied()).fold(0.0, f64::max)
    };
    let upper = Panel { top: TOP, axis: Axis::linear(highest(&rates)) };
    let all_latencies = latencies.iter().flat_map(|s| s.values.iter().flatten().copied());
    let lower = Panel { top: TOP + PANEL + GAP, axis: Axis::log(all_latencies) };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="{LEFT}" y="20" font-size="15">{}</text>"#, escape(title));
    for (panel, series, name) in
        [(&upper, &rates[..], "operations per second"), (&lower, &latencies[..], "latency")]
    {
        draw_panel(&mut svg, panel, name, seconds.len());
        for s in series {
            draw_series(&mut svg, panel, s);
        }
    }
    draw_legend(&mut svg, rates.iter().chain(&latencies));
    svg.push_str("</svg>\n");
    svg
}

/// The frame, the horizontal lines with their labels, and the seconds.
fn draw_panel(svg: &mut String, panel: &Panel, name: &str, seconds: usize) {
    let (bottom, right) = (panel.top + PANEL, WIDTH - RIGHT);
    for (value, label) in panel.axis.ticks() {
        let y = panel.y(value);
        let _ = write!(svg, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/>"##);
        let _ =
            write!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#, LEFT - 4.0, y + 4.0);
    }
    let _ = write!(svg, r#"<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>"#);
    let _ = write!(svg, r#"<line x1="{LEFT}" y1="{}" x2="{LEFT}" y2="{bottom}" stroke="black"/>"#, panel.top);
    let _ = write!(svg, r#"<text x="{}" y="{}" font-size="13">{name}</text>"#, LEFT + 6.0, panel.top - 6.0);
    // Second s ends at the right edge of its slot.
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step) {
        let edge = LEFT + s as f64 / seconds.max(1) as f64 * (WIDTH - LEFT - RIGHT);
        let _ = write!(svg, r#"<text x="{edge:.1}" y="{}" text-anchor="middle">{s}s</text>"#, bottom + 16.0);
    }
}

/// One path per series; a second without a value starts a new stretch.
fn draw_series(svg: &mut String, panel: &Panel, series: &Series) {
    let n = series.values.len();
    let mut d = String::new();
    let mut pen_down = false;
    for (i, value) in series.values.iter().enumerate() {
        match value {
            Some(v) => {
                let command = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{command}{:.1},{:.1} ", x(i, n), panel.y(*v));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    let _ = write!(
        svg,
        r#"<path d="{}" fill="none" stroke="{}" stroke-width="1.5"><title>{}</title></path>"#,
        d.trim_end(),
        series.color,
        series.label
    );
}

fn draw_legend<'a>(svg: &mut String, series: impl Iterator<Item = &'a Series>) {
    let y = HEIGHT - 14.0;
    for (i, s) in series.enumerate() {
        let x = LEFT + i as f64 * 160.0;
        let _ = write!(
            svg,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="3"/>"#,
            y - 4.0,
            x + 20.0,
            y - 4.0,
            s.color
        );
        let _ = write!(svg, r#"<text x="{}" y="{y}">{}</text>"#, x + 26.0, s.label);
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="end">seconds since timing started</text>"#,
        WIDTH - RIGHT,
        HEIGHT - 14.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(ops: u64, errors: u64, p50_us: u64, p99_us: u64) -> Second {
        Second { ops, errors, precondition_failed: 0, p50_us, p99_us, max_us: p99_us }
    }

    /// Every element is closed, in order; `None` if not.
    fn balanced(svg: &str) -> Option<usize> {
        let mut open: Vec<&str> = Vec::new();
        let mut elements = 0;
        for tag in svg.split('<').skip(1) {
            let tag = tag.split('>').next()?;
            if let Some(name) = tag.strip_prefix('/') {
                (open.pop()? == name).then_some(())?;
            } else if !tag.ends_with('/') {
                open.push(tag.split_whitespace().next()?);
            }
            elements += usize::from(!tag.starts_with('/'));
        }
        open.is_empty().then_some(elements)
    }

    /// Every number in the path data, the coordinates and the sizes.
    fn numbers(svg: &str) -> Vec<f64> {
        svg.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .filter_map(|word| word.trim_start_matches(['M', 'L']).parse::<f64>().ok())
            .collect()
    }

    #[test]
    fn the_picture_has_a_line_per_series_and_only_finite_numbers() {
        let seconds = [second(900, 0, 1_200, 4_000), second(0, 3, 0, 0), second(1_100, 1, 900, 30_000)];
        let svg = render("put <16>", &seconds);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(balanced(&svg).is_some(), "unbalanced: {svg}");
        assert_eq!(svg.matches("<path ").count(), 4, "ops, errors, p50, p99");
        assert!(svg.contains("put &lt;16&gt;"));
        // The latency lines break at the second without operations.
        let p50 = svg.split("<path ").nth(3).expect("the p50 path");
        assert!(p50.contains("<title>p50 latency</title>") && p50.matches('M').count() == 2, "{p50}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(numbers(&svg).iter().all(|n| n.is_finite()));
    }

    #[test]
    fn a_run_without_errors_or_operations_still_draws() {
        let svg = render("empty", &[second(0, 0, 0, 0)]);
        assert!(balanced(&svg).is_some());
        assert_eq!(svg.matches("<path ").count(), 3, "no errors line");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(render("none", &[]).starts_with("<svg"));
    }

    #[test]
    fn axes_end_at_round_numbers() {
        let top = |max: f64| match Axis::linear(max) {
            Axis::Linear { max } => max.round(),
            Axis::Log { .. } => f64::NAN,
        };
        assert_eq!([top(1_234.0), top(2_266.0), top(9_000.0), top(0.0)], [1_600.0, 2_400.0, 10_000.0, 1.0]);
        let log = Axis::log([0.35, 42.0].into_iter());
        assert!(matches!(log, Axis::Log { min, max } if min == 0.1 && max == 100.0));
        assert_eq!(log.ticks().len(), 4);
        assert_eq!(log.fraction(10.0), 2.0 / 3.0);
    }
}
