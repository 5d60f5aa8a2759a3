//! The PNG chart of `augserve bench`: wall milliseconds per batch for each stage, and
//! images/s end to end, one bar per configuration (device x threads), CPU against GPU.
//!
//! plotters draws into an RGB buffer (its own PNG encoder would pull a second `image`
//! version); the font comes from `epaint_default_fonts`, so no system font is needed.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// One bar group member: a configuration's label and its values.
pub struct Series {
    pub label: String,
    /// Wall ms per batch for each of `STAGES`.
    pub stage_ms: [f64; 4],
    pub images_per_s: f64,
}

pub const STAGES: [&str; 4] = [
    "decode + colour (wall)",
    "resize",
    "mix + normalise",
    "total",
];

const FONT: &str = "augserve-chart";
const PALETTE: [RGBColor; 6] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
];

fn register_font() -> anyhow::Result<()> {
    // Registering twice is harmless; an unparsable font would be a build problem.
    plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
        .map_err(|_| anyhow::anyhow!("the embedded chart font does not parse"))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e:?}")
}

/// Draws one grouped bar panel: `groups` along x, one bar per series in each group.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    groups: &[&str],
    series: &[(String, Vec<f64>)],
) -> anyhow::Result<()> {
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.18;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .margin_bottom(56)
        .x_label_area_size(4)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;
    let n = series.len().max(1) as f64;
    let width = 0.8 / n;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        let x0 = |g: usize| g as f64 + 0.1 + s as f64 * width;
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                Rectangle::new([(x0(g), 0.0), (x0(g) + width * 0.92, v)], color.filled())
            }))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        // The value above each bar, so the figure can be read without a ruler.
        chart
            .draw_series(values.iter().enumerate().map(|(g, &v)| {
                let text = if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                };
                Text::new(
                    text,
                    (x0(g), v + ymax * 0.01),
                    (FONT, 12).into_font().color(&BLACK),
                )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()
        .map_err(err)?;
    // Group names under the axis, centred on each group (in the panel's pixel frame).
    for (g, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        let (ox, oy) = area.get_base_pixel();
        let style =
            (FONT, 15)
                .into_font()
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ));
        area.draw_text(name, &style, (px - ox, py - oy + 8))
            .map_err(err)?;
    }
    Ok(())
}

/// Writes the two-panel chart to `path` (PNG, 1400x560).
pub fn write_png(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    register_font()?;
    let (w, h) = (1400u32, 560u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, (FONT, 20)).map_err(err)?;
        let (left, right) = root.split_horizontally(w * 62 / 100);
        let stage_series: Vec<(String, Vec<f64>)> = series
            .iter()
            .map(|s| (s.label.clone(), s.stage_ms.to_vec()))
            .collect();
        panel(
            &left,
            "wall ms per batch, by stage (lower is better)",
            "ms per batch",
            &STAGES,
            &stage_series,
        )?;
        let rate_series: Vec<(String, Vec<f64>)> = series
            .iter()
            .map(|s| (s.label.clone(), vec![s.images_per_s]))
            .collect();
        panel(
            &right,
            "end to end (higher is better)",
            "images/s",
            &["images/s"],
            &rate_series,
        )?;
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| anyhow::anyhow!("chart buffer has the wrong size"))?;
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
