//! Transforms applied to every frame before encoding, in the capture thread.
//!
//! [`FrameSizeReducer`] implements vidgear's `frame_size_reduction`: shrink each frame by a
//! percentage so it costs less to encode and send. [`stabilize::Stabilizer`] implements
//! `stabilize`.

use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};

use std::time::Instant;

use crate::draw::{draw_text, fill_rect};

pub mod stabilize;
use crate::frame::I420Frame;

/// What a blank frame says when the source has ended for good (vidgear's wording).
pub const THE_END: &str = "The End";
/// What a blank frame says while the source is gone in infinite mode (vidgear's wording).
pub const NO_INPUT: &str = "No Input";

/// Drops the colour of a frame, keeping its brightness (vidgear's `COLOR_BGR2GRAY`).
pub fn make_grayscale(frame: &mut I420Frame) {
    let (_, u, v) = frame.planes_mut();
    u.fill(128);
    v.fill(128);
}

/// A black frame with `text` in white, centred, as large as fits (sizes must be even).
pub fn blank_frame(width: u32, height: u32, text: &str, captured_at: Instant) -> I420Frame {
    let mut frame = I420Frame::new_grey(width, height, captured_at);
    let (w, h) = (width as usize, height as usize);
    fill_rect(&mut frame, 0, 0, w, h, (16, 128, 128));
    let chars = text.chars().count().max(1);
    let scale = (w * 3 / 4 / (chars * 8)).min(h / 5 / 8).max(1);
    let (text_w, text_h) = (chars * 8 * scale, 8 * scale);
    draw_text(&mut frame, text, w.saturating_sub(text_w) / 2, h.saturating_sub(text_h) / 2, scale, 235);
    frame
}

/// The largest `frame_size_reduction` accepted, in percent (as in vidgear).
pub const MAX_FRAME_SIZE_REDUCTION: u8 = 90;

/// Why a transform could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The reduction percentage is out of range.
    #[error("frame_size_reduction must be between 0 and {MAX_FRAME_SIZE_REDUCTION} percent, got {0}")]
    ReductionOutOfRange(u8),
}

/// Resizes I420 frames (bilinear, plane by plane).
pub struct FrameScaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl std::fmt::Debug for FrameScaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameScaler").finish_non_exhaustive()
    }
}

impl Default for FrameScaler {
    fn default() -> Self {
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        FrameScaler { resizer: Resizer::new(), options }
    }
}

impl FrameScaler {
    /// `frame` resized to `width x height` (both even, as 4:2:0 needs), captured when it was.
    pub fn scale(&mut self, frame: &I420Frame, width: u32, height: u32) -> I420Frame {
        let mut out = I420Frame::new_grey(width, height, frame.captured_at());
        let (src_planes, dst_planes) = (frame.planes(), out.planes_mut());
        let (cw, ch) = (frame.chroma_width(), frame.chroma_height());
        let (out_cw, out_ch) = (width / 2, height / 2);
        for (src, dst, (sw, sh), (dw, dh)) in [
            (src_planes.0, dst_planes.0, (frame.width(), frame.height()), (width, height)),
            (src_planes.1, dst_planes.1, (cw, ch), (out_cw, out_ch)),
            (src_planes.2, dst_planes.2, (cw, ch), (out_cw, out_ch)),
        ] {
            // Plane sizes follow from the frames' own dimensions, and u8 pixels need no
            // alignment, so neither view can be rejected.
            let src =
                images::ImageRef::new(sw, sh, src, PixelType::U8).expect("source plane matches its frame's dimensions");
            let mut dst = images::Image::from_slice_u8(dw, dh, dst, PixelType::U8)
                .expect("destination plane matches its frame's dimensions");
            self.resizer.resize(&src, &mut dst, &self.options).expect("planes of one pixel type resize");
        }
        out
    }
}

/// `frame` at half its width and height (rounded down to even sizes, at least 2x2), each
/// pixel the average of the two by two it covers: a rendition ladder's usual step, exact,
/// and several times cheaper than the general [`FrameScaler`] (see BENCHMARKS.md).
pub fn halve(frame: &I420Frame) -> I420Frame {
    let (width, height) = halved_size(frame.width(), frame.height());
    let mut out = I420Frame::new_grey(width, height, frame.captured_at());
    let (source, halved) = (frame.planes(), out.planes_mut());
    let (chroma_width, out_chroma) = (frame.chroma_width() as usize, (width / 2) as usize);
    halve_plane(source.0, frame.width() as usize, halved.0, width as usize);
    halve_plane(source.1, chroma_width, halved.1, out_chroma);
    halve_plane(source.2, chroma_width, halved.2, out_chroma);
    out
}

/// The size [`halve`] gives a `width x height` frame.
pub fn halved_size(width: u32, height: u32) -> (u32, u32) {
    (((width / 2) & !1).max(2), ((height / 2) & !1).max(2))
}

/// Fills `halved` (rows of `halved_width`) with the averages of `source`'s two-by-two
/// blocks (rows of `source_width`); a source too small for a block repeats its edge.
fn halve_plane(source: &[u8], source_width: usize, halved: &mut [u8], halved_width: usize) {
    let source_rows = source.len() / source_width.max(1);
    for (y, row) in halved.chunks_exact_mut(halved_width.max(1)).enumerate() {
        let top = &source[(2 * y).min(source_rows - 1) * source_width..][..source_width];
        let bottom = &source[(2 * y + 1).min(source_rows - 1) * source_width..][..source_width];
        for (x, pixel) in row.iter_mut().enumerate() {
            let (left, right) = ((2 * x).min(source_width - 1), (2 * x + 1).min(source_width - 1));
            let sum = u16::from(top[left]) + u16::from(top[right]) + u16::from(bottom[left]) + u16::from(bottom[right]);
            *pixel = ((sum + 2) / 4) as u8;
        }
    }
}

/// The even size (at least 2x2) of a `width x height` picture scaled by `scale`.
pub fn scaled_size(width: u32, height: u32, scale: f64) -> (u32, u32) {
    let side = |side: u32| (((f64::from(side) * scale).round() as u32) & !1).max(2);
    (side(width), side(height))
}

/// Shrinks frames by a fixed percentage of their width and height. Output sizes are always
/// even, as 4:2:0 encoders require; 0 percent passes even-sized frames through untouched.
pub struct FrameSizeReducer {
    percent: u8,
    scaler: FrameScaler,
}

impl std::fmt::Debug for FrameSizeReducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSizeReducer").field("percent", &self.percent).finish_non_exhaustive()
    }
}

impl FrameSizeReducer {
    /// A reducer for `percent` in `0..=90`.
    pub fn new(percent: u8) -> Result<Self, TransformError> {
        if percent > MAX_FRAME_SIZE_REDUCTION {
            return Err(TransformError::ReductionOutOfRange(percent));
        }
        Ok(FrameSizeReducer { percent, scaler: FrameScaler::default() })
    }

    /// The size a `width x height` frame has after reduction.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        let scale = |side: u32| {
            let reduced = (u64::from(side) * u64::from(100 - self.percent) + 50) / 100;
            ((reduced as u32) & !1).max(2)
        };
        (scale(width), scale(height))
    }

    /// Returns the reduced frame (the same frame when no resizing is needed).
    pub fn apply(&mut self, frame: I420Frame) -> I420Frame {
        let (width, height) = (frame.width(), frame.height());
        let (out_w, out_h) = self.output_size(width, height);
        if (out_w, out_h) == (width, height) {
            return frame;
        }
        self.scaler.scale(&frame, out_w, out_h)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::source::test_pattern::{FrameCode, TestPattern};

    #[test]
    fn halving_averages_each_two_by_two_block() {
        let mut frame = I420Frame::new_grey(4, 4, Instant::now());
        let (y, u, _) = frame.planes_mut();
        y.copy_from_slice(&[0, 4, 8, 8, 4, 0, 8, 8, 100, 100, 1, 2, 100, 100, 3, 4]);
        u.copy_from_slice(&[10, 20, 30, 40]);
        let halved = halve(&frame);
        assert_eq!((halved.width(), halved.height()), (2, 2));
        let (y, u, v) = halved.planes();
        assert_eq!(y, [2, 8, 100, 3]);
        assert_eq!((u, v), (&[25][..], &[128][..]));
        assert_eq!(halved_size(1280, 720), (640, 360));
        assert_eq!(halved_size(320, 180), (160, 90));
    }

    #[test]
    fn reduces_by_percentage_to_even_sizes() {
        let reducer = FrameSizeReducer::new(20).unwrap();
        assert_eq!(reducer.output_size(1280, 720), (1024, 576));
        assert_eq!(FrameSizeReducer::new(0).unwrap().output_size(641, 481), (640, 480));
        assert_eq!(FrameSizeReducer::new(90).unwrap().output_size(1280, 720), (128, 72));
        assert_eq!(
            FrameSizeReducer::new(91).unwrap_err().to_string(),
            "frame_size_reduction must be between 0 and 90 percent, got 91"
        );
    }

    #[test]
    fn grayscale_keeps_luma_and_neutralises_chroma() {
        let mut frame = TestPattern::new(320, 240, 30).render(7, Instant::now());
        let luma_before = frame.planes().0.to_vec();
        make_grayscale(&mut frame);
        let (y, u, v) = frame.planes();
        assert_eq!(y, luma_before.as_slice());
        assert!(u.iter().chain(v).all(|&c| c == 128));
    }

    #[test]
    fn blank_frames_are_black_with_white_text_in_the_middle() {
        let frame = blank_frame(640, 360, NO_INPUT, Instant::now());
        let (y, u, _) = frame.planes();
        assert_eq!((frame.width(), frame.height()), (640, 360));
        assert_eq!(y[0], 16, "black corner");
        assert!(u.iter().all(|&c| c == 128), "no colour");
        let middle_row = &y[180 * 640..181 * 640];
        assert!(middle_row.contains(&235), "text crosses the middle");
        assert_eq!(FrameCode::read(y, 640, 640, 360), None);
    }

    #[test]
    fn the_reduced_picture_keeps_its_content() {
        let frame = TestPattern::new(1280, 720, 30).render(1234, Instant::now());
        let reduced = FrameSizeReducer::new(50).unwrap().apply(frame);
        assert_eq!((reduced.width(), reduced.height()), (640, 360));
        assert_eq!(FrameCode::read(reduced.planes().0, 640, 640, 360), Some(1234));
    }
}
