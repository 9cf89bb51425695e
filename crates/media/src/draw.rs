//! Drawing into I420 frames: filled rectangles and text in an 8x8 bitmap font. Used by the
//! test pattern and by the blank "No Input" / "The End" frames.

use font8x8::UnicodeFonts;

use crate::frame::I420Frame;

/// Fills a rectangle (clipped to the frame) with one colour given as (Y, U, V).
pub(crate) fn fill_rect(frame: &mut I420Frame, x: usize, y: usize, w: usize, h: usize, (luma, u, v): (u8, u8, u8)) {
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    let cw = frame.chroma_width() as usize;
    let (x_end, y_end) = ((x + w).min(fw), (y + h).min(fh));
    let (y_plane, u_plane, v_plane) = frame.planes_mut();
    for row in y.min(fh)..y_end {
        y_plane[row * fw + x.min(fw)..row * fw + x_end].fill(luma);
    }
    for row in y.min(fh) / 2..y_end.div_ceil(2) {
        let range = row * cw + x.min(fw) / 2..row * cw + x_end.div_ceil(2);
        u_plane[range.clone()].fill(u);
        v_plane[range].fill(v);
    }
}

/// Draws `text` in the 8x8 bitmap font, each font pixel `scale` pixels square.
pub(crate) fn draw_text(frame: &mut I420Frame, text: &str, x: usize, y: usize, scale: usize, luma: u8) {
    for (index, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    let px = x + (index * 8 + gx) * scale;
                    fill_rect(frame, px, y + gy * scale, scale, scale, (luma, 128, 128));
                }
            }
        }
    }
}
