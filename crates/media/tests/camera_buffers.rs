//! Camera buffers as a real camera would fill them, recorded by ffmpeg from the test
//! pattern (YUYV, MJPEG with and without Huffman tables), converted by the V4L2 reader:
//! each picture must keep its frame code, and match the original (YUYV) or ffmpeg's own
//! decoding (MJPEG). No camera is needed.

#![cfg(all(feature = "v4l2", target_os = "linux"))]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use webgear_media::frame::{Frame, I420Frame, PixelFormat};
use webgear_media::source::test_pattern::{FrameCode, TestPattern};
use webgear_media::source::v4l2::CameraFormat;

const WIDTH: u32 = 640;
const HEIGHT: u32 = 360;
const NUMBER: u64 = 1234;

fn picture() -> I420Frame {
    TestPattern::new(WIDTH, HEIGHT, 30).render(NUMBER, Instant::now())
}

/// Runs ffmpeg on `input` (raw I420 of the picture's size, or whatever `input_options`
/// say) with these output options, and returns what it wrote.
fn ffmpeg(input: &[u8], input_options: &[&str], output_options: &[&str]) -> Vec<u8> {
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(input_options)
        .args(["-i", "pipe:0"])
        .args(output_options)
        .arg("pipe:1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed");
    ffmpeg.stdin.take().unwrap().write_all(input).unwrap();
    let output = ffmpeg.wait_with_output().unwrap();
    assert!(output.status.success());
    output.stdout
}

/// What a camera would deliver for the test picture, recorded by ffmpeg.
fn record(output_options: &[&str]) -> Vec<u8> {
    let size = format!("{WIDTH}x{HEIGHT}");
    ffmpeg(picture().as_bytes(), &["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size], output_options)
}

/// The frame kept the picture's frame code, and its luma is within a step of
/// `reference` (I420 of the same size) on average.
fn assert_same_picture(frame: Frame, reference: &[u8]) {
    assert_eq!((frame.width(), frame.height()), (WIDTH, HEIGHT));
    let converted = frame.into_i420();
    let (luma, _, _) = converted.planes();
    assert_eq!(FrameCode::read(luma, WIDTH as usize, WIDTH as usize, HEIGHT as usize), Some(NUMBER as u16));
    let expected = &reference[..luma.len()];
    let mean_error: f64 =
        luma.iter().zip(expected).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>() / luma.len() as f64;
    assert!(mean_error < 1.0, "luma differs by {mean_error:.2} on average");
}

/// ffmpeg's own decoding of a JPEG, as I420: what a correct MJPEG reader produces.
fn decoded_by_ffmpeg(jpeg: &[u8]) -> Vec<u8> {
    ffmpeg(jpeg, &["-f", "mjpeg"], &["-pix_fmt", "yuv420p", "-f", "rawvideo"])
}

#[test]
fn a_yuyv_buffer_converts_to_the_same_picture() {
    let buffer = record(&["-pix_fmt", "yuyv422", "-f", "rawvideo"]);
    assert_eq!(buffer.len(), (WIDTH * HEIGHT * 2) as usize);
    let frame = CameraFormat::Yuyv.convert(&buffer, WIDTH, HEIGHT, WIDTH * 2).unwrap();
    assert_eq!(frame.format(), PixelFormat::I420);
    assert_same_picture(frame, picture().as_bytes());
}

#[test]
fn an_mjpeg_buffer_converts_to_the_same_picture() {
    let jpeg = record(&["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "2", "-f", "mjpeg"]);
    assert_same_picture(CameraFormat::Mjpeg.convert(&jpeg, WIDTH, HEIGHT, 0).unwrap(), &decoded_by_ffmpeg(&jpeg));
}

#[test]
fn an_mjpeg_buffer_without_huffman_tables_uses_the_standard_ones() {
    let jpeg = record(&["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-q:v", "2", "-huffman", "default", "-f", "mjpeg"]);
    let stripped = without_segment(&jpeg, 0xC4);
    assert!(stripped.len() < jpeg.len(), "the Huffman tables were there to remove");
    let frame = CameraFormat::Mjpeg.convert(&stripped, WIDTH, HEIGHT, 0).unwrap();
    assert_same_picture(frame, &decoded_by_ffmpeg(&jpeg));
}

#[test]
fn a_broken_mjpeg_buffer_is_an_error() {
    let jpeg = record(&["-c:v", "mjpeg", "-pix_fmt", "yuvj422p", "-f", "mjpeg"]);
    let error = CameraFormat::Mjpeg.convert(&jpeg[..200], WIDTH, HEIGHT, 0).unwrap_err();
    assert!(error.starts_with("MJPEG frame did not decode"), "{error}");
}

/// The JPEG without its marker segments of type `marker` (0xC4: Huffman tables), as many
/// cameras send MJPEG.
fn without_segment(jpeg: &[u8], marker: u8) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let kind = jpeg[at + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        if kind == 0xDA {
            // Start of scan: the entropy-coded data runs to the end.
            out.extend_from_slice(&jpeg[at..]);
            return out;
        }
        if kind != marker {
            out.extend_from_slice(&jpeg[at..at + 2 + length]);
        }
        at += 2 + length;
    }
    panic!("no start of scan in the JPEG");
}
