//! The one font every map uses, compiled into the binary: DejaVu Sans (Bitstream Vera license,
//! see assets/fonts/LICENSE-DejaVu). plotters' `ab_glyph` text backend has no system-font
//! lookup, so without this every caption, label and legend fails with FontUnavailable.

use plotters::style::{register_font, FontStyle};
use std::sync::Once;

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register the font under "sans-serif" (all styles map to the regular face). Idempotent.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            register_font(super::render::FONT, style, DEJAVU_SANS)
                .unwrap_or_else(|_| panic!("the bundled DejaVu Sans font is not a valid TTF"));
        }
    });
}
