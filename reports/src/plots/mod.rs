//! Plots with plotters, each written as PNG and SVG from one drawing function.
//!
//! Readable defaults everywhere: a bundled font (DejaVu Sans, so PNG text renders on machines
//! without system fonts), labelled axes with units, the legend in its own column beside the panels
//! so it never covers data, and the Okabe-Ito colour-blind-safe palette with one colour and marker
//! per method, the same in every plot of a report.

pub mod bars;
pub mod figures;
pub mod heatmap;
pub mod lines;
pub mod needle;
pub mod ratio;
pub mod reuse;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::ReportError;

pub const FONT: &str = "sans-serif";

/// Register the bundled font once per process.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu is a valid TrueType font; registration only fails on a malformed file.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour vision
/// deficiencies. Black is kept for the uncompressed baseline; yellow comes last (weak on white).
pub const OKABE_ITO: [RGBColor; 7] = [
    RGBColor(0x00, 0x72, 0xB2), // blue
    RGBColor(0xD5, 0x5E, 0x00), // vermillion
    RGBColor(0x00, 0x9E, 0x73), // bluish green
    RGBColor(0xE6, 0x9F, 0x00), // orange
    RGBColor(0xCC, 0x79, 0xA7), // reddish purple
    RGBColor(0x56, 0xB4, 0xE9), // sky blue
    RGBColor(0xF0, 0xE4, 0x42), // yellow
];
pub const BASELINE_COLOUR: RGBColor = RGBColor(0, 0, 0);
pub const GREY: RGBColor = RGBColor(0x80, 0x80, 0x80);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    Circle,
    Square,
    Triangle,
    Diamond,
}

/// One colour and marker per method, fixed for a whole report.
#[derive(Clone, Debug)]
pub struct Palette {
    methods: Vec<String>,
    baseline: String,
}

impl Palette {
    /// `methods` in table order; the baseline gets black.
    pub fn new(methods: &[String], baseline: &str) -> Self {
        let mut ms: Vec<String> = Vec::new();
        for m in methods {
            if !ms.contains(m) {
                ms.push(m.clone());
            }
        }
        Palette {
            methods: ms,
            baseline: baseline.to_string(),
        }
    }

    fn index(&self, method: &str) -> usize {
        self.methods
            .iter()
            .filter(|m| **m != self.baseline)
            .position(|m| m == method)
            .unwrap_or(self.methods.len())
    }

    pub fn colour(&self, method: &str) -> RGBColor {
        if method == self.baseline {
            return BASELINE_COLOUR;
        }
        OKABE_ITO[self.index(method) % OKABE_ITO.len()]
    }

    /// Markers change when colours repeat, so (colour, marker) stays unique for 28 methods.
    pub fn marker(&self, method: &str) -> Marker {
        if method == self.baseline {
            return Marker::Square;
        }
        let i = self.index(method);
        [
            Marker::Circle,
            Marker::Triangle,
            Marker::Diamond,
            Marker::Square,
        ][(i / OKABE_ITO.len()) % 4]
    }

    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    pub fn baseline(&self) -> &str {
        &self.baseline
    }
}

/// `c` at opacity `a` over white, as an opaque colour (for legend swatches).
pub fn tint(c: RGBColor, a: f64) -> RGBColor {
    let f = |x: u8| (x as f64 * a + 255.0 * (1.0 - a)).round() as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

pub type DrawResult = Result<(), String>;

/// Any plotters error as text.
pub fn de<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A figure: its size and how to draw it on any backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// A plot written to disk.
#[derive(Clone, Debug)]
pub struct PlotFile {
    /// File stem (`score_vs_ratio`).
    pub name: String,
    pub title: String,
    /// What it shows and how to read it (for the HTML page).
    pub caption: String,
    pub png: PathBuf,
    pub svg: PathBuf,
    pub width: u32,
    pub height: u32,
}

/// Draw `fig` to `dir/name.png` and `dir/name.svg`.
pub fn save<F: Figure>(
    fig: &F,
    dir: &Path,
    name: &str,
    title: &str,
    caption: &str,
) -> Result<PlotFile, ReportError> {
    register_fonts();
    let (w, h) = fig.size();
    let err = |message: String| ReportError::Plot {
        plot: name.to_string(),
        message,
    };

    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(de(e)))?;
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(de(e)))?;
    }
    let png_path = dir.join(format!("{name}.png"));
    write_png(&png_path, &rgb, w, h).map_err(|e| err(e.to_string()))?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(de(e)))?;
        fig.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(de(e)))?;
    }
    let svg_path = dir.join(format!("{name}.svg"));
    crate::atomic::write_atomic(&svg_path, svg).map_err(|source| ReportError::Io {
        op: "writing",
        path: svg_path.clone(),
        source,
    })?;
    Ok(PlotFile {
        name: name.into(),
        title: title.into(),
        caption: caption.into(),
        png: png_path,
        svg: svg_path,
        width: w,
        height: h,
    })
}

fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<(), Box<dyn std::error::Error>> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    crate::atomic::write_atomic(path, &bytes)?;
    Ok(())
}

// ---- drawing helpers shared by the figures -------------------------------------------------

pub const TITLE_H: u32 = 56;
pub const LEGEND_W: u32 = 260;

pub fn text_style(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// Draw a marker centred at `p` (pixel coordinates of the area it is drawn on).
pub fn marker_element<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: (i32, i32),
    m: Marker,
    colour: RGBColor,
    size: i32,
) -> DrawResult {
    let style = colour.filled();
    let (x, y) = p;
    match m {
        Marker::Circle => area.draw(&Circle::new(p, size, style)).map_err(de),
        Marker::Square => area
            .draw(&Rectangle::new(
                [(x - size, y - size), (x + size, y + size)],
                style,
            ))
            .map_err(de),
        Marker::Triangle => area
            .draw(&Polygon::new(
                vec![
                    (x, y - size - 1),
                    (x - size - 1, y + size),
                    (x + size + 1, y + size),
                ],
                style,
            ))
            .map_err(de),
        Marker::Diamond => area
            .draw(&Polygon::new(
                vec![
                    (x, y - size - 2),
                    (x + size + 1, y),
                    (x, y + size + 2),
                    (x - size - 1, y),
                ],
                style,
            ))
            .map_err(de),
    }
}

/// A dashed straight line between two pixel points.
pub fn dashed<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    a: (i32, i32),
    b: (i32, i32),
    style: ShapeStyle,
    dash: i32,
) -> DrawResult {
    let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
    let len = (dx * dx + dy * dy).sqrt();
    if len < 1.0 {
        return Ok(());
    }
    let steps = (len / dash as f64).ceil() as i32;
    for i in (0..steps).step_by(2) {
        let t0 = i as f64 / steps as f64;
        let t1 = ((i + 1) as f64 / steps as f64).min(1.0);
        let p = |t: f64| (a.0 + (dx * t) as i32, a.1 + (dy * t) as i32);
        area.draw(&PathElement::new(vec![p(t0), p(t1)], style))
            .map_err(de)?;
    }
    Ok(())
}

/// What one legend line shows before its text.
#[derive(Clone, Debug)]
pub enum Swatch {
    /// A method: its colour as a line with its marker.
    Method { colour: RGBColor, marker: Marker },
    /// A dashed reference line.
    Dashed(RGBColor),
    /// A plain line.
    Line(RGBColor),
    /// An interval bar.
    Interval,
    /// A filled box (stacked-bar components, heat-map colours).
    Box(RGBColor),
    /// A heading line (no swatch).
    Heading,
}

#[derive(Clone, Debug)]
pub struct LegendEntry {
    pub swatch: Swatch,
    pub text: String,
}

impl LegendEntry {
    pub fn method(p: &Palette, method: &str, text: impl Into<String>) -> Self {
        LegendEntry {
            swatch: Swatch::Method {
                colour: p.colour(method),
                marker: p.marker(method),
            },
            text: text.into(),
        }
    }
}

/// Draw a legend column: one entry per line from the top, long texts cut with an ellipsis.
pub fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let line_h = 26;
    let mut y = 16;
    let max_chars = ((w as i32 - 60) / 8).max(8) as usize;
    for e in entries {
        let cy = y + line_h / 2;
        let text_x = match &e.swatch {
            Swatch::Heading => 8,
            _ => 48,
        };
        match &e.swatch {
            Swatch::Method { colour, marker } => {
                area.draw(&PathElement::new(
                    vec![(8, cy), (40, cy)],
                    colour.stroke_width(2),
                ))
                .map_err(de)?;
                marker_element(area, (24, cy), *marker, *colour, 5)?;
            }
            Swatch::Dashed(c) => dashed(area, (8, cy), (40, cy), c.stroke_width(2), 5)?,
            Swatch::Line(c) => area
                .draw(&PathElement::new(
                    vec![(8, cy), (40, cy)],
                    c.stroke_width(2),
                ))
                .map_err(de)?,
            Swatch::Interval => {
                let s = BLACK.stroke_width(1);
                area.draw(&PathElement::new(vec![(24, cy - 9), (24, cy + 9)], s))
                    .map_err(de)?;
                area.draw(&PathElement::new(vec![(19, cy - 9), (29, cy - 9)], s))
                    .map_err(de)?;
                area.draw(&PathElement::new(vec![(19, cy + 9), (29, cy + 9)], s))
                    .map_err(de)?;
            }
            Swatch::Box(c) => {
                area.draw(&Rectangle::new([(12, cy - 8), (36, cy + 8)], c.filled()))
                    .map_err(de)?;
                area.draw(&Rectangle::new(
                    [(12, cy - 8), (36, cy + 8)],
                    BLACK.stroke_width(1),
                ))
                .map_err(de)?;
            }
            Swatch::Heading => {}
        }
        let mut text = e.text.clone();
        if text.chars().count() > max_chars {
            text = text.chars().take(max_chars - 1).collect::<String>() + "…";
        }
        let style = if matches!(e.swatch, Swatch::Heading) {
            (FONT, 16).into_font().style(FontStyle::Bold).color(&BLACK)
        } else {
            text_style(15)
        };
        area.draw(&Text::new(text, (text_x, cy - 8), style))
            .map_err(de)?;
        y += line_h;
    }
    Ok(())
}

/// The height a legend of `entries` lines needs below the title strip.
pub fn legend_height(entries: usize) -> u32 {
    TITLE_H + 16 + 26 * entries as u32 + 12
}

/// Split `root` into a title strip, a panel area and a legend column; draw the title.
pub fn layout<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<(DrawingArea<DB, Shift>, DrawingArea<DB, Shift>), String> {
    let (w, _) = root.dim_in_pixel();
    let (top, rest) = root.split_vertically(TITLE_H);
    top.draw(&Text::new(
        title.to_string(),
        (16, 14),
        (FONT, 24).into_font().style(FontStyle::Bold).color(&BLACK),
    ))
    .map_err(de)?;
    let (panels, legend) = rest.split_horizontally(w - LEGEND_W);
    Ok((panels, legend))
}

/// A panel grid: `n` panels in up to `max_cols` columns.
pub fn grid(n: usize, max_cols: usize) -> (usize, usize) {
    let cols = n.clamp(1, max_cols);
    (cols, n.div_ceil(cols).max(1))
}

/// Nice axis bounds around `lo..hi` with a margin; never empty.
pub fn padded(lo: f64, hi: f64, pad: f64) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    if (hi - lo).abs() < 1e-12 {
        let d = if lo.abs() > 1e-12 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        return (lo - d, hi + d);
    }
    let m = (hi - lo) * pad;
    (lo - m, hi + m)
}
