//! The built-in test pattern: moving colour stripes, a bouncing box, the frame number in
//! large digits, and the frame number again as a machine-readable [`FrameCode`] that
//! survives H.264 compression and scaling, so tests can read it after decoding.

use std::time::Instant;

use super::pace::Pacer;
use super::{FrameSource, SourceError};
use crate::draw::{draw_text, fill_rect};
use crate::frame::{Frame, I420Frame};

/// The width, in pixels, of one light-to-dark cycle of the stripes.
const STRIPE_PERIOD: usize = 128;

/// A real-time synthetic source: each `read` blocks until the next frame is due. A reader
/// that pauses finds the pattern where it left it.
#[derive(Debug)]
pub struct TestPattern {
    width: u32,
    height: u32,
    frame_rate: u32,
    frame_number: u64,
    pacer: Pacer,
}

impl Default for TestPattern {
    /// 1280x720 at 30 frames per second.
    fn default() -> Self {
        TestPattern::new(1280, 720, 30)
    }
}

impl TestPattern {
    /// A pattern of the given size (rounded up to even numbers, at least 64x64) and rate
    /// (at least 1 frame per second).
    pub fn new(width: u32, height: u32, frame_rate: u32) -> Self {
        let frame_rate = frame_rate.max(1);
        TestPattern {
            width: width.max(64).next_multiple_of(2),
            height: height.max(64).next_multiple_of(2),
            frame_rate,
            frame_number: 0,
            pacer: Pacer::new(f64::from(frame_rate)),
        }
    }

    /// Draws frame `number` without waiting for it to be due.
    pub fn render(&self, number: u64, captured_at: Instant) -> I420Frame {
        let mut frame = I420Frame::new_grey(self.width, self.height, captured_at);
        let (w, h) = (self.width as usize, self.height as usize);
        let shift = (number as usize).wrapping_mul(4) % STRIPE_PERIOD;
        {
            let (y_plane, u_plane, v_plane) = frame.planes_mut();
            // Diagonal stripes that scroll by four pixels a frame: each row is the one above
            // shifted by a pixel, so every row is a window on one ramp.
            let ramp: Vec<u8> = (0..w + STRIPE_PERIOD).map(|i| 48 + (i % STRIPE_PERIOD) as u8).collect();
            for (row, line) in y_plane.chunks_exact_mut(w).enumerate() {
                let start = (row + shift) % STRIPE_PERIOD;
                line.copy_from_slice(&ramp[start..start + w]);
            }
            // Eight colour bands that drift sideways, one band every few seconds: the same
            // in every row.
            let cw = w.div_ceil(2);
            let bands: [(u8, u8); 8] =
                [(128, 128), (44, 142), (156, 44), (72, 58), (184, 198), (212, 114), (100, 212), (128, 128)];
            let band_at = |col: usize| bands[((col * 8 / cw) + (number as usize / 90)) % bands.len()];
            let u_line: Vec<u8> = (0..cw).map(|col| band_at(col).0).collect();
            let v_line: Vec<u8> = (0..cw).map(|col| band_at(col).1).collect();
            for (u_row, v_row) in u_plane.chunks_exact_mut(cw).zip(v_plane.chunks_exact_mut(cw)) {
                u_row.copy_from_slice(&u_line);
                v_row.copy_from_slice(&v_line);
            }
        }
        // A box that bounces left and right across the middle.
        let box_size = h / 6;
        let travel = (w - box_size) as u64;
        let phase = (number * 8) % (2 * travel);
        let box_x = if phase < travel { phase } else { 2 * travel - phase } as usize;
        fill_rect(&mut frame, box_x, h / 2 - box_size / 2, box_size, box_size, (235, 160, 60));

        // The frame number, large, on a dark plate near the bottom.
        let text = format!("{number:06}");
        let scale = (h / 60).max(1);
        let text_w = text.len() * 8 * scale;
        let (text_x, text_y) = ((w - text_w) / 2, h - 12 * scale);
        fill_rect(&mut frame, text_x - scale, text_y - scale, text_w + 2 * scale, 10 * scale, (16, 128, 128));
        draw_text(&mut frame, &text, text_x, text_y, scale, 235);

        FrameCode::draw(&mut frame, number as u16);
        frame
    }
}

impl FrameSource for TestPattern {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        self.pacer.wait();
        let frame = self.render(self.frame_number, Instant::now());
        self.frame_number += 1;
        Ok(Some(frame.into()))
    }

    fn frame_rate(&self) -> Option<f64> {
        Some(f64::from(self.frame_rate))
    }
}

/// The frame number drawn as a row of cells at the top-left corner, one bit per cell, least
/// significant first: white is 1, black is 0. Two more cells, white then black, follow the
/// sixteen bits so a reader can tell a code from an arbitrary picture. A cell's side is
/// 1/40 of the frame width, so the code survives downscaling and lossy compression.
#[derive(Debug, Clone, Copy)]
pub struct FrameCode;

impl FrameCode {
    /// Bits of frame number the code carries (numbers wrap after 65535).
    pub const BITS: usize = 16;

    fn cell_size(width: usize) -> f64 {
        width as f64 / 40.0
    }

    /// Draws `number` into the top-left corner of `frame`.
    pub fn draw(frame: &mut I420Frame, number: u16) {
        let cell = Self::cell_size(frame.width() as usize).round() as usize;
        for index in 0..Self::BITS + 2 {
            let white = match index {
                i if i < Self::BITS => number >> i & 1 == 1,
                i => i == Self::BITS,
            };
            let luma = if white { 235 } else { 16 };
            fill_rect(frame, index * cell, 0, cell, cell, (luma, 128, 128));
        }
    }

    /// Reads the number from a decoded picture's luma plane (`stride` bytes per row), or
    /// `None` if the corner does not hold a code.
    pub fn read(luma: &[u8], stride: usize, width: usize, height: usize) -> Option<u16> {
        let cell = Self::cell_size(width);
        let half = (cell / 4.0).max(1.0) as usize;
        let centre_y = (cell / 2.0) as usize;
        if centre_y + half >= height {
            return None;
        }
        let bit = |index: usize| -> Option<bool> {
            let centre_x = ((index as f64 + 0.5) * cell) as usize;
            if centre_x + half >= width || centre_x < half {
                return None;
            }
            let (mut sum, mut count) = (0u32, 0u32);
            for row in centre_y - half..=centre_y + half {
                let line = luma.get(row * stride..row * stride + width)?;
                for &px in &line[centre_x - half..=centre_x + half] {
                    sum += u32::from(px);
                    count += 1;
                }
            }
            Some(sum / count > 128)
        };
        if !bit(Self::BITS)? || bit(Self::BITS + 1)? {
            return None;
        }
        (0..Self::BITS).try_fold(0u16, |number, index| Some(number | u16::from(bit(index)?) << index))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::frame::PixelFormat;

    #[test]
    fn the_code_reads_back_what_was_drawn() {
        let pattern = TestPattern::new(1280, 720, 30);
        for number in [0u64, 1, 2, 255, 4096, 65535, 65536 + 7] {
            let frame = pattern.render(number, Instant::now());
            let (y, _, _) = frame.planes();
            assert_eq!(FrameCode::read(y, 1280, 1280, 720), Some(number as u16), "frame {number}");
        }
    }

    #[test]
    fn a_picture_without_a_code_reads_as_none() {
        let grey = I420Frame::new_grey(640, 360, Instant::now());
        assert_eq!(FrameCode::read(grey.planes().0, 640, 640, 360), None);
    }

    #[test]
    fn consecutive_frames_differ_and_are_paced() {
        let mut pattern = TestPattern::new(320, 240, 50);
        let first = pattern.read().unwrap().unwrap();
        let second = pattern.read().unwrap().unwrap();
        assert_ne!(first.data(), second.data());
        assert_eq!((second.width(), second.height(), second.format()), (320, 240, PixelFormat::I420));
        assert!(second.captured_at() - first.captured_at() >= Duration::from_millis(15));
    }
}
