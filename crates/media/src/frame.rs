//! Raw video frames: what sources produce ([`Frame`], in any [`PixelFormat`]) and what
//! encoders consume ([`I420Frame`]). Conversion to I420 happens once, in the capture thread.

use std::fmt;
use std::time::Instant;

/// The memory layout of a [`Frame`]'s pixels. All packed formats are tightly packed rows
/// (no padding between rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// One byte of luminance per pixel.
    Gray,
    /// Three bytes per pixel, blue first (OpenCV's default).
    Bgr,
    /// Four bytes per pixel, blue first, alpha last (alpha is ignored).
    Bgra,
    /// Three bytes per pixel, red first.
    Rgb,
    /// Planar YUV 4:2:0: a full-size Y plane, then U and V planes of
    /// `ceil(width/2) x ceil(height/2)` each.
    I420,
}

impl PixelFormat {
    /// The number of bytes a `width x height` image of this format occupies.
    pub fn buffer_len(self, width: u32, height: u32) -> usize {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::Gray => w * h,
            PixelFormat::Bgr | PixelFormat::Rgb => w * h * 3,
            PixelFormat::Bgra => w * h * 4,
            PixelFormat::I420 => w * h + 2 * chroma_len(width, height),
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PixelFormat::Gray => "Gray",
            PixelFormat::Bgr => "BGR",
            PixelFormat::Bgra => "BGRA",
            PixelFormat::Rgb => "RGB",
            PixelFormat::I420 => "I420",
        };
        f.write_str(name)
    }
}

/// Why a buffer could not be made into a [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Width or height is zero.
    #[error("a frame of {width}x{height} has no pixels")]
    Empty {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
    },
    /// The buffer's length does not match the size and pixel format.
    #[error("a {width}x{height} {format} frame needs {expected} bytes, but the buffer has {actual}")]
    WrongLength {
        /// The width given.
        width: u32,
        /// The height given.
        height: u32,
        /// The pixel format given.
        format: PixelFormat,
        /// The length that size and format require.
        expected: usize,
        /// The length of the buffer given.
        actual: usize,
    },
}

/// One raw video frame in any supported [`PixelFormat`], as a source produced it.
#[derive(Clone)]
pub struct Frame {
    width: u32,
    height: u32,
    format: PixelFormat,
    data: Vec<u8>,
    captured_at: Instant,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("captured_at", &self.captured_at)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// A frame captured now. Fails when the size is empty or `data` has the wrong length
    /// for `width x height` in `format`.
    pub fn new(width: u32, height: u32, format: PixelFormat, data: Vec<u8>) -> Result<Self, FrameError> {
        if width == 0 || height == 0 {
            return Err(FrameError::Empty { width, height });
        }
        let expected = format.buffer_len(width, height);
        if data.len() != expected {
            return Err(FrameError::WrongLength { width, height, format, expected, actual: data.len() });
        }
        Ok(Frame { width, height, format, data, captured_at: Instant::now() })
    }

    /// Overrides the capture time (by default the moment the frame was made).
    pub fn with_capture_time(mut self, captured_at: Instant) -> Self {
        self.captured_at = captured_at;
        self
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel layout of [`Frame::data`].
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The pixels.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// When the frame was captured.
    pub fn captured_at(&self) -> Instant {
        self.captured_at
    }

    /// Converts to planar I420 (BT.601, limited range), the encoders' input.
    pub fn into_i420(self) -> I420Frame {
        let Frame { width, height, format, data, captured_at } = self;
        let data = match format {
            PixelFormat::I420 => data,
            PixelFormat::Gray => gray_to_i420(&data, width, height),
            PixelFormat::Bgr => packed_to_i420(&data, width, height, 3, [2, 1, 0]),
            PixelFormat::Rgb => packed_to_i420(&data, width, height, 3, [0, 1, 2]),
            PixelFormat::Bgra => packed_to_i420(&data, width, height, 4, [2, 1, 0]),
        };
        I420Frame { width, height, data, captured_at }
    }
}

/// A planar YUV 4:2:0 frame: the input of every encoder.
#[derive(Clone)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
    captured_at: Instant,
}

impl fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("captured_at", &self.captured_at)
            .finish_non_exhaustive()
    }
}

impl I420Frame {
    /// A mid-grey frame of the given size (dimensions must be non-zero).
    pub fn new_grey(width: u32, height: u32, captured_at: Instant) -> Self {
        let luma = (width * height) as usize;
        let mut data = vec![128u8; PixelFormat::I420.buffer_len(width, height)];
        data[..luma].fill(126);
        I420Frame { width, height, data, captured_at }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// When the frame was captured.
    pub fn captured_at(&self) -> Instant {
        self.captured_at
    }

    /// Width of the U and V planes.
    pub fn chroma_width(&self) -> u32 {
        self.width.div_ceil(2)
    }

    /// Height of the U and V planes.
    pub fn chroma_height(&self) -> u32 {
        self.height.div_ceil(2)
    }

    /// The Y, U and V planes, each tightly packed.
    pub fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = chroma_len(self.width, self.height);
        let (y, rest) = self.data.split_at(luma);
        let (u, v) = rest.split_at(chroma);
        (y, u, v)
    }

    /// The Y, U and V planes, mutable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = (self.width * self.height) as usize;
        let chroma = chroma_len(self.width, self.height);
        let (y, rest) = self.data.split_at_mut(luma);
        let (u, v) = rest.split_at_mut(chroma);
        (y, u, v)
    }

    /// The whole buffer: Y, then U, then V.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

impl From<I420Frame> for Frame {
    fn from(frame: I420Frame) -> Self {
        let I420Frame { width, height, data, captured_at } = frame;
        Frame { width, height, format: PixelFormat::I420, data, captured_at }
    }
}

fn chroma_len(width: u32, height: u32) -> usize {
    (width.div_ceil(2) * height.div_ceil(2)) as usize
}

fn gray_to_i420(gray: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(PixelFormat::I420.buffer_len(width, height));
    out.extend(gray.iter().map(|&l| luma_from_full_range(l)));
    out.resize(PixelFormat::I420.buffer_len(width, height), 128);
    out
}

fn luma_from_full_range(l: u8) -> u8 {
    (16 + (u32::from(l) * 219 + 127) / 255) as u8
}

/// BT.601 limited-range conversion of packed 8-bit RGB-like pixels. `order` gives the byte
/// offsets of red, green and blue within a pixel of `bytes_per_pixel` bytes. Chroma is the
/// average of each 2x2 block (edge blocks of odd-sized frames average what exists).
fn packed_to_i420(src: &[u8], width: u32, height: u32, bytes_per_pixel: usize, order: [usize; 3]) -> Vec<u8> {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(cw * ch);
    let rgb_at = |x: usize, y: usize| {
        let p = (y * w + x) * bytes_per_pixel;
        [src[p + order[0]], src[p + order[1]], src[p + order[2]]].map(i32::from)
    };
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = rgb_at(x, y);
            y_plane[y * w + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut sum, mut count) = ([0i32; 3], 0i32);
            for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)].map(|(dx, dy)| (2 * cx + dx, 2 * cy + dy)) {
                if x < w && y < h {
                    let px = rgb_at(x, y);
                    sum.iter_mut().zip(px).for_each(|(s, c)| *s += c);
                    count += 1;
                }
            }
            let [r, g, b] = sum.map(|s| s / count);
            u_plane[cy * cw + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v_plane[cy * cw + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_length_and_names_the_shape() {
        let err = Frame::new(4, 2, PixelFormat::Bgr, vec![0; 10]).unwrap_err();
        assert_eq!(err.to_string(), "a 4x2 BGR frame needs 24 bytes, but the buffer has 10");
        assert!(matches!(Frame::new(0, 2, PixelFormat::Gray, vec![]), Err(FrameError::Empty { .. })));
    }

    #[test]
    fn odd_sizes_round_chroma_up() {
        assert_eq!(PixelFormat::I420.buffer_len(3, 3), 9 + 2 * 4);
        let frame = Frame::new(3, 3, PixelFormat::Rgb, vec![255; 27]).unwrap().into_i420();
        let (y, u, v) = frame.planes();
        assert_eq!((y.len(), u.len(), v.len()), (9, 4, 4));
    }

    #[test]
    fn colours_convert_to_bt601_limited_range() {
        // One pure red and one pure blue 2x2 image in each packed format.
        let red_bgr = [0u8, 0, 255].repeat(4);
        let red_rgb = [255u8, 0, 0].repeat(4);
        let red_bgra = [0u8, 0, 255, 255].repeat(4);
        for (format, data) in [(PixelFormat::Bgr, red_bgr), (PixelFormat::Rgb, red_rgb), (PixelFormat::Bgra, red_bgra)]
        {
            let frame = Frame::new(2, 2, format, data).unwrap().into_i420();
            let (y, u, v) = frame.planes();
            assert_eq!((y[0], u[0], v[0]), (82, 90, 240), "{format}");
        }
        let white = Frame::new(2, 2, PixelFormat::Gray, vec![255; 4]).unwrap().into_i420();
        assert_eq!(white.planes().0, &[235; 4]);
        let black = Frame::new(2, 2, PixelFormat::Gray, vec![0; 4]).unwrap().into_i420();
        assert_eq!(black.planes().0, &[16; 4]);
        assert_eq!(black.planes().1, &[128]);
    }
}
