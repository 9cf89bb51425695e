//! V4L2 cameras read directly, without ffmpeg: the device's modes are listed, the one
//! closest to the requested size and rate is chosen ([`negotiate`]), and each buffer is
//! converted to a [`Frame`] ([`CameraFormat::convert`]). YUYV and MJPEG (the formats
//! nearly every USB camera offers) are read; a camera offering neither is left to ffmpeg.

use std::path::Path;

use linuxvideo::format::{FrameIntervals, FrameSizes, PixFormat, PixelFormat as V4l2Format};
use linuxvideo::stream::ReadStream;
use linuxvideo::{BufType, Device, Fract};
use tracing::{debug, info};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::{FrameSource, SourceError, SourceSettings};
use crate::frame::{Frame, PixelFormat};

/// The size asked of a camera when the user asks for none: HD, which nearly every camera
/// offers and every browser plays comfortably.
const DEFAULT_SIZE: (u32, u32) = (1280, 720);

/// The rate asked of a camera when the user asks for none.
const DEFAULT_RATE: f64 = 30.0;

/// A camera pixel format this reader converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CameraFormat {
    /// Packed 4:2:2: `Y0 U Y1 V` for each pair of pixels. Preferred: no decoding.
    Yuyv,
    /// Motion JPEG: one JPEG per frame, often without Huffman tables (the standard ones
    /// apply). Cameras offer it for sizes and rates USB cannot carry uncompressed.
    Mjpeg,
}

/// One way a camera can deliver frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraMode {
    /// The pixel format.
    pub format: CameraFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub rate: f64,
}

/// Chooses the camera mode closest to `settings` (by default 1280x720 at 30 fps): first the
/// size nearest the requested one, then a rate at or just above the requested one (or the
/// fastest below it), then YUYV over MJPEG, as it needs no decoding. `None` when `modes` is
/// empty.
pub fn negotiate(modes: &[CameraMode], settings: &SourceSettings) -> Option<CameraMode> {
    let (want_width, want_height) = settings.resolution.unwrap_or(DEFAULT_SIZE);
    let want_area = f64::from(want_width) * f64::from(want_height);
    let want_rate = settings.framerate.unwrap_or(DEFAULT_RATE);
    let size_cost = |mode: &CameraMode| {
        let exact = (mode.width, mode.height) == (want_width, want_height);
        let area = f64::from(mode.width) * f64::from(mode.height);
        // How many times larger or smaller, in halvings; exact sizes beat same-area ones.
        if exact { 0.0 } else { (area / want_area).log2().abs() + 0.01 }
    };
    let rate_cost = |mode: &CameraMode| {
        if mode.rate >= want_rate - 0.01 { (mode.rate - want_rate) / want_rate } else { 1.0 + (want_rate - mode.rate) }
    };
    let format_cost = |mode: &CameraMode| match mode.format {
        CameraFormat::Yuyv => 0,
        CameraFormat::Mjpeg => 1,
    };
    modes.iter().copied().min_by(|a, b| {
        size_cost(a)
            .total_cmp(&size_cost(b))
            .then(rate_cost(a).total_cmp(&rate_cost(b)))
            .then(format_cost(a).cmp(&format_cost(b)))
    })
}

impl CameraFormat {
    fn from_v4l2(format: V4l2Format) -> Option<Self> {
        match format {
            V4l2Format::YUYV => Some(CameraFormat::Yuyv),
            V4l2Format::MJPG | V4l2Format::JPEG => Some(CameraFormat::Mjpeg),
            _ => None,
        }
    }

    fn to_v4l2(self) -> V4l2Format {
        match self {
            CameraFormat::Yuyv => V4l2Format::YUYV,
            CameraFormat::Mjpeg => V4l2Format::MJPG,
        }
    }

    /// Converts one buffer the camera filled into a frame. `bytes_per_line` is the row
    /// pitch the driver reported (YUYV rows may be padded); MJPEG carries its own size.
    pub fn convert(self, buffer: &[u8], width: u32, height: u32, bytes_per_line: u32) -> Result<Frame, String> {
        match self {
            CameraFormat::Yuyv => yuyv_to_i420(buffer, width, height, bytes_per_line as usize),
            CameraFormat::Mjpeg => mjpeg_to_i420(buffer),
        }
    }
}

/// YUYV 4:2:2 to I420: luma as it is, each chroma sample the mean of two rows.
fn yuyv_to_i420(buffer: &[u8], width: u32, height: u32, pitch: usize) -> Result<Frame, String> {
    let (w, h) = (width as usize, height as usize);
    let pitch = pitch.max(w * 2);
    let needed = pitch * (h - 1) + w * 2;
    if w % 2 != 0 || buffer.len() < needed {
        return Err(format!("a {width}x{height} YUYV buffer needs {needed} bytes, got {}", buffer.len()));
    }
    let (chroma_w, chroma_h) = (w / 2, h.div_ceil(2));
    let mut data = vec![0u8; PixelFormat::I420.buffer_len(width, height)];
    let (y_plane, chroma) = data.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(chroma_w * chroma_h);
    for (row, luma) in y_plane.chunks_exact_mut(w).enumerate() {
        let packed = &buffer[row * pitch..row * pitch + w * 2];
        for (out, pixel) in luma.iter_mut().zip(packed.iter().step_by(2)) {
            *out = *pixel;
        }
    }
    for chroma_row in 0..chroma_h {
        let top = &buffer[2 * chroma_row * pitch..][..w * 2];
        let bottom_row = (2 * chroma_row + 1).min(h - 1);
        let bottom = &buffer[bottom_row * pitch..][..w * 2];
        for x in 0..chroma_w {
            let mean = |at: usize| (u16::from(top[at]) + u16::from(bottom[at])).div_ceil(2) as u8;
            u_plane[chroma_row * chroma_w + x] = mean(4 * x + 1);
            v_plane[chroma_row * chroma_w + x] = mean(4 * x + 3);
        }
    }
    Frame::new(width, height, PixelFormat::I420, data).map_err(|e| e.to_string())
}

/// An APP0 segment marking a JPEG as AVI MJPEG, which makes the decoder supply the
/// standard Huffman tables (ITU T.81 K.3) that cameras leave out of their frames.
const AVI1_SEGMENT: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0];

/// One MJPEG buffer to an I420 frame. JPEG's Y'CbCr is full range; H.264 wants the
/// limited (video) range, so the samples are rescaled, with no trip through RGB.
fn mjpeg_to_i420(buffer: &[u8]) -> Result<Frame, String> {
    let Some(after_start) = buffer.strip_prefix(&[0xFF, 0xD8]) else {
        return Err("MJPEG frame did not decode: it does not start with a JPEG marker".into());
    };
    let marked = [&buffer[..2], &AVI1_SEGMENT, after_start].concat();
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(&marked), options);
    let pixels = decoder.decode().map_err(|e| format!("MJPEG frame did not decode: {e:?}"))?;
    let info = decoder.info().ok_or("MJPEG frame has no header")?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if decoder.output_colorspace() != Some(ColorSpace::YCbCr) || pixels.len() != (width * height * 3) as usize {
        return Err(format!("MJPEG frame is not colour Y'CbCr ({:?})", decoder.output_colorspace()));
    }
    let (w, h) = (width as usize, height as usize);
    let (chroma_w, chroma_h) = (w.div_ceil(2), h.div_ceil(2));
    let mut data = vec![0u8; PixelFormat::I420.buffer_len(width, height)];
    let (y_plane, chroma) = data.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(chroma_w * chroma_h);
    let luma = |full: u8| (16 + (u32::from(full) * 219 + 127) / 255) as u8;
    let chroma_of = |sum: u32, count: u32| {
        let mean = f64::from(sum) / f64::from(count);
        (128.0 + (mean - 128.0) * 224.0 / 255.0).round() as u8
    };
    for (out, pixel) in y_plane.iter_mut().zip(pixels.chunks_exact(3)) {
        *out = luma(pixel[0]);
    }
    for cy in 0..chroma_h {
        for cx in 0..chroma_w {
            let (mut cb, mut cr, mut count) = (0u32, 0u32, 0u32);
            for y in (2 * cy)..(2 * cy + 2).min(h) {
                for x in (2 * cx)..(2 * cx + 2).min(w) {
                    let pixel = &pixels[(y * w + x) * 3..];
                    cb += u32::from(pixel[1]);
                    cr += u32::from(pixel[2]);
                    count += 1;
                }
            }
            u_plane[cy * chroma_w + cx] = chroma_of(cb, count);
            v_plane[cy * chroma_w + cx] = chroma_of(cr, count);
        }
    }
    Frame::new(width, height, PixelFormat::I420, data).map_err(|e| e.to_string())
}

/// A V4L2 camera streaming in the mode [`negotiate`] chose.
pub struct V4l2Camera {
    spec: String,
    stream: ReadStream,
    format: CameraFormat,
    width: u32,
    height: u32,
    bytes_per_line: u32,
    rate: f64,
}

impl std::fmt::Debug for V4l2Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Camera")
            .field("device", &self.spec)
            .field("format", &self.format)
            .field("size", &(self.width, self.height))
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

impl V4l2Camera {
    /// Opens the camera at `device` and starts it in the mode closest to `settings`.
    /// Fails with [`SourceError::Unsupported`] when it offers neither YUYV nor MJPEG.
    pub fn open(device: &Path, settings: &SourceSettings) -> Result<Self, SourceError> {
        let spec = device.display().to_string();
        let open_error = |reason: String| SourceError::Open { spec: spec.clone(), reason };
        let camera = Device::open(device).map_err(|e| open_error(format!("not a V4L2 camera: {e}")))?;
        let modes = list_modes(&camera).map_err(|e| open_error(format!("could not list its modes: {e}")))?;
        debug!(device = %spec, ?modes, "camera modes");
        let Some(mode) = negotiate(&modes, settings) else {
            return Err(SourceError::Unsupported { spec, reason: "the camera offers neither YUYV nor MJPEG".into() });
        };
        let capture = camera
            .video_capture(PixFormat::new(mode.width, mode.height, mode.format.to_v4l2()))
            .map_err(|e| open_error(format!("could not set {mode:?}: {e}")))?;
        let format = capture.format();
        let (width, height, bytes_per_line) = (format.width(), format.height(), format.bytes_per_line());
        let Some(format) = CameraFormat::from_v4l2(format.pixel_format()) else {
            return Err(open_error(format!("the driver switched to {:?}", format.pixel_format())));
        };
        let interval = Fract::new(1000, (mode.rate * 1000.0).round() as u32);
        let rate = match capture.set_frame_interval(interval) {
            Ok(chosen) if chosen.numerator() > 0 => f64::from(chosen.denominator()) / f64::from(chosen.numerator()),
            _ => mode.rate,
        };
        let stream = capture.into_stream().map_err(|e| open_error(format!("could not start streaming: {e}")))?;
        info!(device = %spec, ?format, width, height, rate, "camera streaming");
        Ok(V4l2Camera { spec, stream, format, width, height, bytes_per_line, rate })
    }
}

/// Every mode the camera offers in a format this reader converts. Ranges of sizes or
/// rates are represented by the requested-size defaults and their limits.
fn list_modes(camera: &Device) -> std::io::Result<Vec<CameraMode>> {
    let mut modes = Vec::new();
    for description in camera.formats(BufType::VIDEO_CAPTURE) {
        let pixel_format = description?.pixel_format();
        let Some(format) = CameraFormat::from_v4l2(pixel_format) else {
            continue;
        };
        let sizes = match camera.frame_sizes(pixel_format)? {
            FrameSizes::Discrete(sizes) => sizes.iter().map(|size| (size.width(), size.height())).collect(),
            FrameSizes::Stepwise(range) | FrameSizes::Continuous(range) => {
                let fits = |(w, h): &(u32, u32)| {
                    (range.min_width()..=range.max_width()).contains(w)
                        && (range.min_height()..=range.max_height()).contains(h)
                };
                let mut sizes = vec![(range.max_width(), range.max_height())];
                sizes.extend([DEFAULT_SIZE, (640, 480)].into_iter().filter(fits));
                sizes
            }
        };
        for (width, height) in sizes {
            let rates: Vec<f64> = match camera.frame_intervals(pixel_format, width, height)? {
                FrameIntervals::Discrete(intervals) => intervals.iter().map(|i| fps(*i.fract())).collect(),
                FrameIntervals::Stepwise(range) | FrameIntervals::Continuous(range) => {
                    vec![fps(*range.min()), fps(*range.max()), DEFAULT_RATE.clamp(fps(*range.max()), fps(*range.min()))]
                }
            };
            modes.extend(rates.into_iter().map(|rate| CameraMode { format, width, height, rate }));
        }
    }
    Ok(modes)
}

fn fps(interval: Fract) -> f64 {
    if interval.numerator() == 0 { 0.0 } else { f64::from(interval.denominator()) / f64::from(interval.numerator()) }
}

impl FrameSource for V4l2Camera {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        let (format, width, height, pitch) = (self.format, self.width, self.height, self.bytes_per_line);
        let converted = self
            .stream
            .dequeue(|buffer| Ok(format.convert(&buffer, width, height, pitch)))
            .map_err(|e| SourceError::Read { spec: self.spec.clone(), reason: e.to_string() })?;
        converted.map(Some).map_err(|reason| SourceError::Read { spec: self.spec.clone(), reason })
    }

    fn frame_rate(&self) -> Option<f64> {
        Some(self.rate)
    }

    fn is_live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typical USB webcam: YUYV is fast only at small sizes, MJPEG at every size.
    fn webcam() -> Vec<CameraMode> {
        let mode = |format, width, height, rate| CameraMode { format, width, height, rate };
        vec![
            mode(CameraFormat::Yuyv, 640, 480, 30.0),
            mode(CameraFormat::Yuyv, 640, 480, 15.0),
            mode(CameraFormat::Yuyv, 1280, 720, 10.0),
            mode(CameraFormat::Yuyv, 1920, 1080, 5.0),
            mode(CameraFormat::Mjpeg, 640, 480, 30.0),
            mode(CameraFormat::Mjpeg, 1280, 720, 30.0),
            mode(CameraFormat::Mjpeg, 1920, 1080, 30.0),
        ]
    }

    fn settings(resolution: Option<(u32, u32)>, framerate: Option<f64>) -> SourceSettings {
        SourceSettings { resolution, framerate, ..SourceSettings::default() }
    }

    #[test]
    fn by_default_hd_at_30_fps_even_if_only_mjpeg_carries_it() {
        let chosen = negotiate(&webcam(), &SourceSettings::default()).unwrap();
        assert_eq!((chosen.format, chosen.width, chosen.height, chosen.rate), (CameraFormat::Mjpeg, 1280, 720, 30.0));
    }

    #[test]
    fn yuyv_wins_when_it_delivers_the_same_size_and_rate() {
        let chosen = negotiate(&webcam(), &settings(Some((640, 480)), None)).unwrap();
        assert_eq!((chosen.format, chosen.rate), (CameraFormat::Yuyv, 30.0));
        let slow = negotiate(&webcam(), &settings(Some((640, 480)), Some(15.0))).unwrap();
        assert_eq!((slow.format, slow.rate), (CameraFormat::Yuyv, 15.0));
    }

    #[test]
    fn unavailable_sizes_and_rates_get_the_nearest_the_camera_has() {
        let near = negotiate(&webcam(), &settings(Some((800, 600)), None)).unwrap();
        assert_eq!((near.width, near.height), (640, 480), "600k pixels is nearer 307k than 922k");
        let fastest = negotiate(&webcam(), &settings(Some((1920, 1080)), Some(60.0))).unwrap();
        assert_eq!((fastest.format, fastest.rate), (CameraFormat::Mjpeg, 30.0));
        assert_eq!(negotiate(&[], &SourceSettings::default()), None);
    }

    #[test]
    fn yuyv_rows_with_padding_convert_and_short_buffers_are_refused() {
        // 4x2 pixels, rows padded to 12 bytes: Y = 10, 20, …; U = 100/110; V = 200/210.
        let row = |y: u8, u: u8, v: u8| vec![y, u, y + 1, v, y + 2, u, y + 3, v, 0, 0, 0, 0];
        let buffer = [row(10, 100, 200), row(20, 110, 210)].concat();
        let frame = CameraFormat::Yuyv.convert(&buffer, 4, 2, 12).unwrap();
        assert_eq!(frame.format(), PixelFormat::I420);
        assert_eq!(frame.data(), &[10, 11, 12, 13, 20, 21, 22, 23, 105, 105, 205, 205]);
        let error = CameraFormat::Yuyv.convert(&buffer[..19], 4, 2, 12).unwrap_err();
        assert_eq!(error, "a 4x2 YUYV buffer needs 20 bytes, got 19");
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused_naming_it() {
        let error = V4l2Camera::open(Path::new("/dev/null"), &SourceSettings::default()).unwrap_err().to_string();
        assert!(error.starts_with("cannot open source \"/dev/null\": not a V4L2 camera"), "{error}");
    }
}
