//! A picture of a run: every operation's latency over time (log scale),
//! failed and indeterminate operations marked, and the fault intervals of a
//! chaos run shaded behind them, like Jepsen's latency plots. Output is a
//! self-contained SVG.
//!
//! Inputs: a history whose events carry `time` (wall-clock microseconds, as
//! `paxosctl torture` writes them), and optionally a fault log with one line
//! per fault: `START_MS END_MS KIND DESCRIPTION...` (wall-clock
//! milliseconds; KIND is partition, loss, kill or pause).

use std::collections::BTreeMap;
use std::fmt::Write;

const WIDTH: f64 = 1200.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Latency axis: 0.1 ms to 100 s, log scale.
const LATENCY_MS_MIN: f64 = 0.1;
const LATENCY_MS_MAX: f64 = 100_000.0;

/// One completed operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub start_us: u64,
    pub latency_us: u64,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ok,
    Fail,
    Info,
}

/// One fault interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub kind: String,
    pub what: String,
}

/// Pairs invocations with completions; events without `time` are skipped.
/// Operations never completed are drawn as indeterminate at the end.
pub fn points(history: &str) -> Vec<Point> {
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let mut points = Vec::new();
    let mut last_us = 0;
    for line in history.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(process), Some(time)) = (event["process"].as_u64(), event["time"].as_u64()) else {
            continue;
        };
        last_us = last_us.max(time);
        let kind = match event["type"].as_str() {
            Some("invoke") => {
                open.insert(process, time);
                continue;
            }
            Some("ok") => Kind::Ok,
            Some("fail") => Kind::Fail,
            Some("info") => Kind::Info,
            _ => continue,
        };
        if let Some(start_us) = open.remove(&process) {
            points.push(Point { start_us, latency_us: time.saturating_sub(start_us), kind });
        }
    }
    for start_us in open.into_values() {
        points.push(Point { start_us, latency_us: last_us.saturating_sub(start_us), kind: Kind::Info });
    }
    points
}

/// Parses the fault log; malformed lines are skipped.
pub fn faults(log: &str) -> Vec<Fault> {
    log.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let start_ms = words.next()?.parse().ok()?;
            let end_ms = words.next()?.parse().ok()?;
            let kind = words.next()?.to_string();
            let what = words.collect::<Vec<_>>().join(" ");
            Some(Fault { start_ms, end_ms, kind, what })
        })
        .collect()
}

fn fault_color(kind: &str) -> &'static str {
    match kind {
        "partition" => "#9ecae1",
        "loss" => "#fdd0a2",
        "kill" => "#fcbba1",
        "pause" => "#d9d9d9",
        _ => "#e5f5e0",
    }
}

fn point_style(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Ok => ("#1b9e77", "ok"),
        Kind::Fail => ("#d62728", "fail"),
        Kind::Info => ("#ff7f0e", "info (unknown outcome)"),
    }
}

struct Scale {
    t0_us: u64,
    span_us: f64,
}

impl Scale {
    fn x(&self, t_us: u64) -> f64 {
        LEFT + (t_us.saturating_sub(self.t0_us) as f64 / self.span_us) * (WIDTH - LEFT - RIGHT)
    }

    fn y(latency_us: u64) -> f64 {
        let ms = (latency_us as f64 / 1000.0).clamp(LATENCY_MS_MIN, LATENCY_MS_MAX);
        let frac = (ms.log10() - LATENCY_MS_MIN.log10()) / (LATENCY_MS_MAX.log10() - LATENCY_MS_MIN.log10());
        HEIGHT - BOTTOM - frac * (HEIGHT - TOP - BOTTOM)
    }
}

/// Renders the SVG.
pub fn render(title: &str, points: &[Point], faults: &[Fault]) -> String {
    let t0_us = points.iter().map(|p| p.start_us).min().unwrap_or(0);
    let t1_us = points.iter().map(|p| p.start_us + p.latency_us).max().unwrap_or(t0_us + 1);
    let scale = Scale { t0_us, span_us: (t1_us.saturating_sub(t0_us)).max(1) as f64 };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(svg, r#"<text x="{LEFT}" y="20" font-size="15">{}</text>"#, escape(title));
    draw_faults(&mut svg, &scale, faults);
    draw_axes(&mut svg, &scale);
    for p in points {
        let (color, _) = point_style(p.kind);
        let (x, y) = (scale.x(p.start_us), Scale::y(p.latency_us));
        let r = if p.kind == Kind::Ok { 1.5 } else { 2.5 };
        let _ = write!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{color}" fill-opacity="0.6"/>"#);
    }
    draw_legend(&mut svg, points);
    svg.push_str("</svg>\n");
    svg
}

fn draw_faults(svg: &mut String, scale: &Scale, faults: &[Fault]) {
    for (i, f) in faults.iter().enumerate() {
        let x0 = scale.x(f.start_ms * 1000).max(LEFT);
        let x1 = scale.x(f.end_ms * 1000).min(WIDTH - RIGHT);
        if x1 <= x0 {
            continue;
        }
        let (h, color) = (HEIGHT - TOP - BOTTOM, fault_color(&f.kind));
        let _ = write!(
            svg,
            r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{h}" fill="{color}" fill-opacity="0.55">"#,
            x1 - x0
        );
        let _ = write!(svg, "<title>{} {}</title></rect>", escape(&f.kind), escape(&f.what));
        let label_y = TOP + 12.0 + (i % 3) as f64 * 13.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{label_y}" font-size="10">{}</text>"#,
            x0 + 2.0,
            escape(&f.kind)
        );
    }
}

fn draw_axes(svg: &mut String, scale: &Scale) {
    let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let _ = write!(svg, r#"<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>"#);
    let _ = write!(svg, r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="black"/>"#);
    let mut ms = LATENCY_MS_MIN;
    while ms <= LATENCY_MS_MAX {
        let y = Scale::y((ms * 1000.0) as u64);
        let _ = write!(svg, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#eee"/>"##);
        let _ =
            write!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{ms} ms</text>"#, LEFT - 4.0, y + 4.0);
        ms *= 10.0;
    }
    let seconds = (scale.span_us / 1e6).ceil() as u64;
    let step = (seconds / 10).max(1);
    for s in (0..=seconds).step_by(step as usize) {
        let x = scale.x(scale.t0_us + s * 1_000_000);
        let _ = write!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{s}s</text>"#, bottom + 16.0);
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">time since start</text>"#,
        WIDTH / 2.0,
        bottom + 34.0
    );
}

fn draw_legend(svg: &mut String, points: &[Point]) {
    let mut x = LEFT;
    let y = HEIGHT - 10.0;
    for kind in [Kind::Ok, Kind::Fail, Kind::Info] {
        let (color, label) = point_style(kind);
        let n = points.iter().filter(|p| p.kind == kind).count();
        let _ = write!(svg, r#"<circle cx="{x}" cy="{}" r="4" fill="{color}"/>"#, y - 4.0);
        let _ = write!(svg, r#"<text x="{}" y="{y}">{label}: {n}</text>"#, x + 8.0);
        x += 190.0;
    }
    for kind in ["partition", "loss", "kill", "pause"] {
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="10" fill="{}"/>"#,
            y - 9.0,
            fault_color(kind)
        );
        let _ = write!(svg, r#"<text x="{}" y="{y}">{kind}</text>"#, x + 16.0);
        x += 90.0;
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HISTORY: &str = r#"{"process":0,"type":"invoke","f":"read","key":"k","value":null,"time":1000000}
{"process":1,"type":"invoke","f":"write","key":"k","value":"a","time":1000500}
{"process":0,"type":"ok","f":"read","key":"k","value":null,"time":1002000}
{"process":1,"type":"info","f":"write","key":"k","value":"a","time":2000500}
{"process":2,"type":"invoke","f":"write","key":"k","value":"b","time":2500000}
"#;

    #[test]
    fn pairs_invocations_with_completions() {
        let got = points(HISTORY);
        assert_eq!(
            got,
            vec![
                Point { start_us: 1_000_000, latency_us: 2_000, kind: Kind::Ok },
                Point { start_us: 1_000_500, latency_us: 1_000_000, kind: Kind::Info },
                Point { start_us: 2_500_000, latency_us: 0, kind: Kind::Info },
            ]
        );
    }

    #[test]
    fn parses_fault_lines_and_skips_garbage() {
        let got = faults("1000 3000 partition isolate node 2\nnonsense\n4000 5000 kill nodes 1,3\n");
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Fault { start_ms: 1000, end_ms: 3000, kind: "partition".into(), what: "isolate node 2".into() }
        );
        assert_eq!(got[1].kind, "kill");
    }

    #[test]
    fn the_picture_shows_operations_and_faults() {
        let svg = render("run <1>", &points(HISTORY), &faults("1001 1500 pause node 3\n"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle cx").count(), 3 + 3, "3 operations and 3 legend dots");
        assert!(svg.contains("<title>pause node 3</title>"));
        assert!(svg.contains("run &lt;1&gt;"));
        assert!(svg.contains("ok: 1") && svg.contains("info (unknown outcome): 2"));
    }
}
