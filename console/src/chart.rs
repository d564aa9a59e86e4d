//! Line charts as SVG, drawn with plotters' SVG backend: the one chart
//! renderer of the project (the console's latency and staleness charts,
//! and `dyno bench`'s reports). Every chart has a title, labelled axes
//! with units, and a legend; a chart without data says so instead of
//! drawing empty axes.

use plotters::prelude::*;

/// A named line.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's text.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Above the plot.
    pub title: String,
    /// The x axis's label, with its unit.
    pub x_label: String,
    /// The y axis's label, with its unit.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// How x tick values read (default: the number).
    pub x_ticks: fn(f64) -> String,
    /// How y tick values read (default: the number).
    pub y_ticks: fn(f64) -> String,
    /// The x range (default: the data's).
    pub x_range: Option<(f64, f64)>,
    /// The y range (default: 0 to a round number above the data).
    pub y_range: Option<(f64, f64)>,
    /// Dots on the points as well as lines.
    pub markers: bool,
    /// Size in pixels.
    pub size: (u32, u32),
}

/// Plain numbers, without needless decimals.
pub fn plain(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e12) || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl LineChart {
    /// A chart with a title and axis labels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> LineChart {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            x_ticks: plain,
            y_ticks: plain,
            x_range: None,
            y_range: None,
            markers: false,
            size: (720, 400),
        }
    }

    /// Adds a line.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> LineChart {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    /// True when no line has a point.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
    }

    /// The SVG document.
    pub fn svg(&self) -> String {
        let mut out = String::new();
        if let Err(e) = self.draw(&mut out) {
            tracing::warn!(error = %e, chart = self.title, "chart could not be drawn");
            out.clear();
            out.push_str(&self.message_svg(&format!("The chart could not be drawn: {e}")));
        }
        out
    }

    /// An SVG of the frame with `text` in place of data.
    fn message_svg(&self, text: &str) -> String {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size).into_drawing_area();
            let _ = root.fill(&WHITE);
            let _ = root.titled(&self.title, ("sans-serif", 18));
            let (w, h) = self.size;
            let _ = root.draw(&Text::new(
                text.to_owned(),
                (w as i32 / 2 - 6 * text.len() as i32 / 2, h as i32 / 2),
                ("sans-serif", 16)
                    .into_font()
                    .color(&RGBColor(90, 100, 115)),
            ));
            let _ = root.present();
        }
        out
    }

    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let y1 = ys.fold(0.0f64, f64::max);
        let x = self.x_range.unwrap_or(if x0 < x1 {
            (x0, x1)
        } else {
            (x0 - 1.0, x0 + 1.0)
        });
        let y = self.y_range.unwrap_or((0.0, nice_max(y1)));
        (x, y)
    }

    fn draw(&self, out: &mut String) -> Result<(), Box<dyn std::error::Error + '_>> {
        if self.is_empty() {
            out.push_str(&self.message_svg("No data yet"));
            return Ok(());
        }
        let ((x0, x1), (y0, y1)) = self.ranges();
        let root = SVGBackend::with_string(out, self.size).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let (xf, yf) = (self.x_ticks, self.y_ticks);
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .x_label_formatter(&|v| xf(*v))
            .y_label_formatter(&|v| yf(*v))
            .x_labels(8)
            .y_labels(6)
            .light_line_style(RGBColor(235, 238, 242))
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let style = ShapeStyle::from(&colour).stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            if self.markers {
                chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 205, 212))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// A round number at or above `v` (1, 2 or 5 times a power of ten).
pub fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_title_axes_and_legend() {
        let svg = LineChart::new("Latency of get", "minutes ago", "latency (ms)")
            .series("p99", vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)])
            .series("p50", vec![(0.0, 0.5), (1.0, 0.7), (2.0, 0.6)])
            .svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        for text in [
            "Latency of get",
            "minutes ago",
            "latency (ms)",
            "p99",
            "p50",
        ] {
            assert!(svg.contains(text), "{text} missing from {svg}");
        }
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "lines drawn"
        );
    }

    #[test]
    fn no_data_says_so() {
        let svg = LineChart::new("Rate", "minutes ago", "requests/s")
            .series("get", vec![])
            .svg();
        assert!(svg.contains("No data yet"), "{svg}");
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn labels_are_escaped() {
        let svg = LineChart::new("a <b> & c", "x", "y")
            .series("s<1>", vec![(0.0, 1.0), (1.0, 2.0)])
            .svg();
        assert!(!svg.contains("<b>") && !svg.contains("s<1>"), "{svg}");
    }

    #[test]
    fn round_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }
}
