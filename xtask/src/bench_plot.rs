//! The benchmark's plot (target/bench/results.png): round-trip latency and
//! request-response throughput against payload size, one line per path.

use crate::bench::Report;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;

/// Debian's fonts-dejavu-core (installed by `cargo xtask setup`).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const COLORS: [RGBColor; 5] = [
    RGBColor(200, 60, 40),
    RGBColor(230, 150, 30),
    RGBColor(60, 120, 200),
    RGBColor(40, 150, 70),
    RGBColor(130, 130, 130),
];

/// Per path: (size, median cycles) of the TCP and UDP round trips.
type Series = Vec<(String, Vec<(f64, f64)>)>;

fn series(report: &Report, proto: &str, f: impl Fn(f64, f64) -> f64) -> Series {
    report
        .runs
        .iter()
        .filter(|(_, r)| r.error.is_none())
        .map(|(p, r)| {
            let pts =
                r.rr.iter()
                    .filter(|((pr, _), _)| pr == proto)
                    .map(|((_, size), (c, _))| (*size as f64, f(*size as f64, c.median)))
                    .collect();
            (format!("{} {}", p.id, p.name), pts)
        })
        .collect()
}

pub fn draw(report: &Report, out: &Path) -> Result<()> {
    let font = std::fs::read(FONT)
        .map_err(|e| anyhow!("{FONT}: {e} (apt-get install fonts-dejavu-core)"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT}: not a font"))?;
    let root = BitMapBackend::new(out, (2100, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(450);
    let panels = [
        (top, "Round-trip latency (kcycles, median)", "kcycles", true),
        (
            bottom,
            "Request-response throughput (payload bytes per kcycle, both ways)",
            "bytes/kcycle",
            false,
        ),
    ];
    for (area, title, ydesc, latency) in panels {
        // Plain TCP, TCP with zero-copy sockets on both ends, UDP.
        let thirds = area.split_evenly((1, 3));
        for (half, proto) in thirds.iter().zip(["tcp", "tcp-zc", "udp"]) {
            let s = if latency {
                series(report, proto, |_, c| c / 1000.0)
            } else {
                series(report, proto, |size, c| 2.0 * size * 1000.0 / c)
            };
            let ymax = s
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
                .fold(1.0f64, f64::max)
                * 1.1;
            let mut chart = ChartBuilder::on(half)
                .caption(format!("{title}, {proto}"), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d((32f64..131072f64).log_scale(), 0f64..ymax)?;
            chart
                .configure_mesh()
                .x_desc("payload bytes")
                .y_desc(ydesc)
                .draw()?;
            for (i, (name, pts)) in s.into_iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{parse_run, Workload, PATHS};

    #[test]
    fn draws_a_png() {
        let lines = |k: f64| -> Vec<String> {
            let mut v: Vec<String> = [64, 4096, 65536]
                .iter()
                .flat_map(|s| {
                    let c = k * *s as f64 + 50000.0;
                    ["tcp", "udp"].map(|p| {
                        format!(
                            "[vm0] bench: rr proto={p} size={s} reps=1 cycles={c}/{c}/{c} ns=1/1/1"
                        )
                    })
                })
                .collect();
            v.push("[vm0] bench: end".into());
            v
        };
        let report = Report {
            runs: PATHS
                .iter()
                .enumerate()
                .map(|(i, p)| (p, parse_run(&lines(10.0 - i as f64))))
                .collect(),
            workload: Workload::smoke(),
            emulator: "test".into(),
        };
        let out = std::env::temp_dir().join(format!("vmlink-plot-{}.png", std::process::id()));
        draw(&report, &out).unwrap();
        let png = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 10_000, "an empty picture: {} bytes", png.len());
    }
}
