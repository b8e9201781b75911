//! The HTML report (`--html FILE`): the summary, and charts of users,
//! requests and failures per second, and the p50/p95/p99 latency of each
//! second over the run, drawn as inline SVG from the `timeline` samples.
//! One self-contained file: no script, no font, nothing fetched when it is
//! opened.

use std::fmt::Write as _;

use crate::summary::Summary;
use crate::timeline::Sample;

/// Chart width in SVG units.
const WIDTH: f64 = 860.0;
/// Chart height in SVG units.
const HEIGHT: f64 = 280.0;
/// Room left of the plot, for the values.
const LEFT: f64 = 64.0;
/// Room below the plot, for the seconds.
const BOTTOM: f64 = 34.0;
/// Room above the plot, for the title and the legend.
const TOP: f64 = 48.0;
/// Room right of the plot.
const RIGHT: f64 = 16.0;
/// Horizontal grid lines per chart, above zero: with an axis top of 1, 2
/// or 5 x 10^n, every line falls on a round value.
const Y_TICKS: usize = 5;
/// Horizontal room per legend entry.
const LEGEND_STEP: f64 = 110.0;
/// The legend's baseline (below the title's).
const LEGEND_Y: f64 = 36.0;

/// One line of a chart.
pub struct Series<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Its colour (CSS).
    pub color: &'a str,
    /// A value per sample; None is a gap (no request finished that second).
    pub values: Vec<Option<f64>>,
}

/// The whole report.
pub fn html(summary: &Summary, samples: &[Sample]) -> String {
    let x: Vec<f64> = samples.iter().map(|s| s.elapsed).collect();
    let users = [Series {
        name: "users",
        color: "#1f77b4",
        values: samples.iter().map(|s| Some(s.users as f64)).collect(),
    }];
    let rates = [
        Series {
            name: "requests/s",
            color: "#2ca02c",
            values: samples.iter().map(|s| Some(s.rps)).collect(),
        },
        Series {
            name: "failures/s",
            color: "#d62728",
            values: samples.iter().map(|s| Some(s.fps)).collect(),
        },
    ];
    let latency = |name, color, p| Series {
        name,
        color,
        values: samples.iter().map(|s| s.window_ms(p)).collect(),
    };
    let latencies = [
        latency("p50", "#1f77b4", 0.5),
        latency("p95", "#ff7f0e", 0.95),
        latency("p99", "#d62728", 0.99),
    ];
    let mut page = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>orders-loadtest report</title>\n\
         <style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}\
         table{border-collapse:collapse}td,th{padding:2px 12px;text-align:left;border-bottom:1px solid #ddd}\
         svg{display:block;margin:1em 0}</style></head><body>\n",
    );
    let _ = writeln!(
        page,
        "<h1>orders-loadtest: {} against {}</h1>",
        escape(&summary.scenario),
        escape(&summary.host)
    );
    page.push_str(&summary_table(summary));
    page.push_str(&chart("Users", "users", &x, &users));
    page.push_str(&chart(
        "Requests and failures per second",
        "per second",
        &x,
        &rates,
    ));
    page.push_str(&chart(
        "Latency of each second (to the response head)",
        "ms",
        &x,
        &latencies,
    ));
    page.push_str("</body></html>\n");
    page
}

fn summary_table(s: &Summary) -> String {
    let failure_pct = if s.requests > 0 {
        100.0 * s.failures as f64 / s.requests as f64
    } else {
        0.0
    };
    let rows = [
        (
            "spawn rate, run time",
            format!("{}/s, {} s", s.spawn_rate, s.run_secs),
        ),
        (
            "users reached",
            format!("{} of {}", s.users_reached, s.users_planned),
        ),
        (
            "users at first failure",
            s.users_at_first_failure
                .map_or("none (0% failures)".into(), |u| u.to_string()),
        ),
        ("requests", s.requests.to_string()),
        ("failures", format!("{} ({failure_pct:.2}%)", s.failures)),
        ("req/s", format!("{:.1}", s.requests_per_second)),
        (
            "p50 / p95 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} ms",
                s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
            ),
        ),
    ];
    let mut t = String::from("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(t, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    t.push_str("</table>\n");
    t
}

/// One line chart as an SVG element: `x` in seconds, one polyline per series.
pub fn chart(title: &str, unit: &str, x: &[f64], series: &[Series<'_>]) -> String {
    let x_max = x.iter().copied().fold(1.0, f64::max);
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied())
            .fold(0.0, f64::max),
    );
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let px = |v: f64| LEFT + v / x_max * plot_w;
    let py = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         font-size=\"12\" role=\"img\"><title>{}</title>\n<text x=\"{LEFT}\" y=\"18\" font-weight=\"bold\">{}</text>\n",
        escape(title),
        escape(title)
    );
    for i in 0..=Y_TICKS {
        let v = y_max * i as f64 / Y_TICKS as f64;
        let y = py(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds</text><text x=\"{LEFT}\" y=\"{:.1}\">0</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        HEIGHT - BOTTOM + 16.0,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM + 16.0,
        short(x_max),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(unit)
    );
    for (i, s) in series.iter().enumerate() {
        for run in runs(x, &s.values) {
            svg.push_str(&draw_run(&run, s.color, px, py));
        }
        let lx = LEFT + LEGEND_STEP * i as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{LEGEND_Y}\">{}</text>",
            LEGEND_Y - 5.0,
            s.color,
            lx + 16.0,
            escape(s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// One stretch of a series: a line, or a dot where it is a single point.
fn draw_run(
    run: &[(f64, f64)],
    color: &str,
    px: impl Fn(f64) -> f64,
    py: impl Fn(f64) -> f64,
) -> String {
    if let [(x, y)] = run {
        return format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{color}\"/>\n",
            px(*x),
            py(*y)
        );
    }
    let points: Vec<String> = run
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        points.join(" ")
    )
}

/// The stretches of a series without gaps, as (x, y) points.
fn runs(x: &[f64], values: &[Option<f64>]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (xv, v) in x.iter().zip(values) {
        match v {
            Some(y) => out.last_mut().expect("never empty").push((*xv, *y)),
            None if out.last().is_some_and(|r| !r.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// A round value at or above `v` for the top of an axis (1, 2 or 5 × 10^n).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// An axis label: 1500 -> "1.5k".
fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", (v / 100.0).round() / 10.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_values() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1200.0), 2000.0);
        assert_eq!(nice_ceiling(45.0), 50.0);
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(20.0), "20");
    }

    #[test]
    fn gaps_split_a_line() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let runs = runs(&x, &[Some(1.0), None, Some(3.0), Some(4.0)]);
        assert_eq!(runs, vec![vec![(1.0, 1.0)], vec![(3.0, 3.0), (4.0, 4.0)]]);
    }

    #[test]
    fn a_chart_draws_each_series_within_its_box() {
        let x = [1.0, 2.0];
        let s = [Series {
            name: "a<b",
            color: "#000",
            values: vec![Some(0.0), Some(10.0)],
        }];
        let svg = chart("T", "ms", &x, &s);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a&lt;b"), "names are escaped");
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        for p in points.split(' ') {
            let (px, py): (f64, f64) = p
                .split_once(',')
                .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()))
                .unwrap();
            assert!(
                (LEFT..=WIDTH - RIGHT).contains(&px) && (TOP..=HEIGHT - BOTTOM).contains(&py),
                "{p}"
            );
        }
    }
}
