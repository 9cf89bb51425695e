//! H.264 read through ffmpeg and sent to viewers as it is: files (local, or fetched over
//! HTTP(S), HLS included) and live network streams (`udp://`, `srt://`, `rtmp://`). ffmpeg
//! copies the H.264 to a pipe (Annex B, an access unit delimiter before each frame; a file
//! at its own pace, a live stream as it comes) without decoding it, and each access unit
//! goes to every viewer untouched. No decoder and no encoder run: the server's cost is
//! reading the input and sending packets.
//!
//! Not every H.264 input can be sent this way, and [`FfmpegH264Source::open`] checks its
//! first seconds before it starts:
//! - no B-frames: WebRTC sends frames in the order they are shown, and a browser would
//!   drop or stall on frames that refer to later ones;
//! - 8-bit 4:2:0 pictures, the only kind browsers decode;
//! - a keyframe at least every [`MAX_KEYFRAME_INTERVAL`]: nobody can ask the file for a
//!   keyframe, so a viewer that joins, or loses data beyond retransmission, is sent the
//!   last one and every frame since at once; the longer the interval, the larger that
//!   burst.
//!
//! When one fails, `open` answers [`SourceError::Unsupported`] with the reason, and the
//! file is decoded and encoded like any other.

use std::time::{Duration, Instant};

use super::ffmpeg::{FfmpegChild, FfmpegInput, Probed, STREAM_ENTRIES, ffmpeg_reading, ffprobe, open_error};
use super::{EncodedSource, SourceError};
use crate::encode::EncodedFrame;

/// The longest keyframe interval a file may have and still be sent as it is (an IP
/// camera's usual one): the most video a viewer that joins, or loses data, is sent at
/// once.
pub const MAX_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// How much of a file (from its start) is checked for B-frames and keyframe spacing.
const CHECKED_SPAN: &str = "%+10";

/// How much of a live stream is checked: the time it delays the start.
const CHECKED_SPAN_LIVE: &str = "%+5";

/// How long ffmpeg studies a live stream before passing it on (its default, 5 s, would
/// delay the start by that much and then send the 5 s it held in one burst). A second
/// finds an H.264 stream's parameters; nothing is decoded.
pub(super) const LIVE_ANALYSIS: [&str; 2] = ["-analyzeduration", "1000000"];

/// How much a keyframe interval may exceed [`MAX_KEYFRAME_INTERVAL`] by (timestamp
/// rounding in containers).
const INTERVAL_TOLERANCE: f64 = 0.01;

/// Bytes asked of the pipe per read.
const READ_SIZE: usize = 64 * 1024;

/// Bytes at the start of `pending` that may hold the delimiter opening it.
const OPENING_DELIMITER: usize = 4;

/// NAL unit types (ITU-T H.264, table 7-1).
const NAL_IDR_SLICE: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_ACCESS_UNIT_DELIMITER: u8 = 9;

/// H.264 video read in real time as access units (Annex B, SPS and PPS before each
/// keyframe, no delimiters).
#[derive(Debug)]
pub struct FfmpegH264Source {
    child: FfmpegChild,
    units: AccessUnits,
    buffer: Vec<u8>,
    width: u32,
    height: u32,
    frame_rate: f64,
}

impl FfmpegH264Source {
    /// Checks that the video of `input` (a file or URL ffmpeg reads; `live` when it paces
    /// itself, as a network stream does) can go to browsers as it is, and starts reading
    /// it. [`SourceError::Unsupported`] says why not when it cannot.
    pub fn open(input: &str, live: bool) -> Result<Self, SourceError> {
        let input_options = if live { LIVE_ANALYSIS.map(str::to_owned).to_vec() } else { Vec::new() };
        FfmpegH264Source::open_input(FfmpegInput::direct(input, &input_options), live)
    }

    /// [`FfmpegH264Source::open`] for an input that may be relayed.
    pub(super) fn open_input(input: FfmpegInput, live: bool) -> Result<Self, SourceError> {
        let span = if live { CHECKED_SPAN_LIVE } else { CHECKED_SPAN };
        let entries = format!("{STREAM_ENTRIES}:packet=pts_time,flags");
        let checked = ffprobe(&input, &["-read_intervals", span, "-show_entries", &entries])?;
        let probed = Probed::from_json(input.spec(), &checked)?;
        let packets: Vec<ProbedPacket> = checked["packets"]
            .as_array()
            .map(|packets| packets.iter().filter_map(ProbedPacket::from_json).collect())
            .unwrap_or_default();
        if let Some(reason) = why_not_sent_as_is(&probed, &packets) {
            return Err(SourceError::Unsupported { spec: input.spec().to_owned(), reason });
        }
        if probed.width == 0 || probed.height == 0 {
            let size = format!("ffprobe reported a {}x{} picture", probed.width, probed.height);
            return Err(open_error(input.spec(), size));
        }
        let mut command = ffmpeg_reading(&input, !live, &[]);
        command.args(["-c:v", "copy", "-bsf:v", "h264_mp4toannexb,h264_metadata=aud=insert"]);
        command.args(["-flush_packets", "1", "-f", "h264", "pipe:1"]);
        let child = FfmpegChild::spawn(&input, command)?;
        tracing::debug!(
            input = input.spec(),
            width = probed.width,
            height = probed.height,
            live,
            "ffmpeg copying H.264"
        );
        Ok(FfmpegH264Source {
            child,
            units: AccessUnits::default(),
            buffer: vec![0; READ_SIZE],
            width: probed.width,
            height: probed.height,
            frame_rate: probed.frame_rate,
        })
    }

    fn frame(&self, unit: AccessUnit) -> EncodedFrame {
        EncodedFrame {
            data: unit.data.into(),
            keyframe: unit.keyframe,
            width: self.width,
            height: self.height,
            captured_at: Instant::now(),
        }
    }
}

impl EncodedSource for FfmpegH264Source {
    fn read(&mut self) -> Result<Option<EncodedFrame>, SourceError> {
        loop {
            if let Some(unit) = self.units.next_unit() {
                return Ok(Some(self.frame(unit)));
            }
            let read = self.child.read(&mut self.buffer)?;
            if read == 0 {
                self.child.finish()?;
                return Ok(self.units.last_unit().map(|unit| self.frame(unit)));
            }
            self.units.push(&self.buffer[..read]);
        }
    }

    fn stop(&mut self) {
        self.child.stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        Some(self.frame_rate)
    }
}

/// One video packet of the checked span, as ffprobe lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProbedPacket {
    /// Presentation time, in seconds.
    shown_at: f64,
    keyframe: bool,
}

impl ProbedPacket {
    fn from_json(packet: &serde_json::Value) -> Option<Self> {
        let shown_at = packet["pts_time"].as_str()?.parse().ok()?;
        let keyframe = packet["flags"].as_str()?.starts_with('K');
        Some(ProbedPacket { shown_at, keyframe })
    }
}

/// Why a file with this stream and these first packets cannot go to browsers as it is,
/// or `None` when it can.
fn why_not_sent_as_is(stream: &Probed, packets: &[ProbedPacket]) -> Option<String> {
    if stream.codec != "h264" {
        return Some(format!("its video is {}, not H.264", stream.codec));
    }
    if !matches!(stream.pixel_format.as_str(), "yuv420p" | "yuvj420p") {
        return Some(format!("its pictures are {}; browsers decode 8-bit 4:2:0 H.264 only", stream.pixel_format));
    }
    if packets.windows(2).any(|pair| pair[1].shown_at < pair[0].shown_at) {
        return Some("it has B-frames (frames stored out of display order), which WebRTC does not carry".into());
    }
    let keyframes: Vec<f64> = packets.iter().filter(|packet| packet.keyframe).map(|packet| packet.shown_at).collect();
    let (Some(first), Some(last)) = (keyframes.first(), packets.last()) else {
        return Some("no keyframe in its first seconds".into());
    };
    let longest_interval = keyframes
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .chain([first - packets[0].shown_at, last.shown_at - keyframes[keyframes.len() - 1]])
        .fold(0.0, f64::max);
    let allowed = MAX_KEYFRAME_INTERVAL.as_secs_f64();
    (longest_interval > allowed + INTERVAL_TOLERANCE).then(|| {
        format!(
            "its keyframes come up to {longest_interval:.1} s apart, and a viewer joining or losing data would \
             be sent that much video at once (sending a file as it is needs one at least every {allowed} s)"
        )
    })
}

/// One access unit, as it goes to viewers.
#[derive(Debug, PartialEq)]
struct AccessUnit {
    /// Annex B NAL units with 4-byte start codes.
    data: Vec<u8>,
    /// Whether it holds an IDR slice (a decoder can start from it).
    keyframe: bool,
}

/// Cuts an Annex B byte stream into access units at its access unit delimiters, which
/// are dropped (they would cost every viewer a packet per frame). A keyframe without its
/// own SPS and PPS gets the latest ones seen, so that a viewer can start from any keyframe.
#[derive(Debug, Default)]
struct AccessUnits {
    /// Bytes received and not yet returned.
    pending: Vec<u8>,
    /// How far past the start of `pending` no delimiter has been found.
    searched: usize,
    last_sps: Option<Vec<u8>>,
    last_pps: Option<Vec<u8>>,
}

impl AccessUnits {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete access unit: one that a following delimiter has closed.
    fn next_unit(&mut self) -> Option<AccessUnit> {
        loop {
            // The delimiter opening `pending` is no boundary: look past its start code.
            let Some(boundary) = find_delimiter(&self.pending, self.searched.max(OPENING_DELIMITER)) else {
                // A start code may straddle what has come and what is to come.
                self.searched = self.pending.len().saturating_sub(4);
                return None;
            };
            let bytes: Vec<u8> = self.pending.drain(..boundary).collect();
            self.searched = 0;
            if let Some(unit) = self.assemble(&bytes) {
                return Some(unit);
            }
        }
    }

    /// Whatever is left once the stream has ended: its last access unit.
    fn last_unit(&mut self) -> Option<AccessUnit> {
        let bytes = std::mem::take(&mut self.pending);
        self.searched = 0;
        self.assemble(&bytes)
    }

    /// An access unit from its bytes, `None` when it holds nothing but delimiters.
    fn assemble(&mut self, bytes: &[u8]) -> Option<AccessUnit> {
        let units: Vec<&[u8]> = nal_units(bytes).filter(|unit| nal_type(unit) != NAL_ACCESS_UNIT_DELIMITER).collect();
        let has = |kind: u8| units.iter().any(|unit| nal_type(unit) == kind);
        let keyframe = has(NAL_IDR_SLICE);
        let mut data = Vec::with_capacity(bytes.len() + 64);
        if keyframe && !has(NAL_SPS) && !has(NAL_PPS) {
            for parameter_set in [&self.last_sps, &self.last_pps].into_iter().flatten() {
                data.extend_from_slice(&[0, 0, 0, 1]);
                data.extend_from_slice(parameter_set);
            }
        }
        for unit in &units {
            match nal_type(unit) {
                NAL_SPS => self.last_sps = Some(unit.to_vec()),
                NAL_PPS => self.last_pps = Some(unit.to_vec()),
                _ => {}
            }
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(unit);
        }
        (!units.is_empty()).then_some(AccessUnit { data, keyframe })
    }
}

fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |header| header & 0x1f)
}

/// Where the start code of the first access unit delimiter at or after `from` begins
/// (its leading zero byte included when it is a 4-byte start code).
fn find_delimiter(data: &[u8], from: usize) -> Option<usize> {
    let found =
        data.get(from..)?.windows(4).position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == NAL_ACCESS_UNIT_DELIMITER)?;
    let at = from + found;
    Some(if at > 0 && data[at - 1] == 0 { at - 1 } else { at })
}

/// The NAL units of Annex B data, without start codes or trailing zero bytes.
fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<usize> =
        data.windows(3).enumerate().filter(|(_, w)| *w == [0, 0, 1]).map(|(at, _)| at + 3).collect();
    let ends: Vec<usize> = starts.iter().skip(1).map(|next| next - 3).chain([data.len()]).collect();
    starts
        .into_iter()
        .zip(ends)
        .map(|(start, end)| {
            let unit = &data[start..end];
            let kept = unit.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1);
            &unit[..kept]
        })
        .filter(|unit| !unit.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    const LONG: &[u8] = &[0, 0, 0, 1];
    const SHORT: &[u8] = &[0, 0, 1];
    const AUD: &[u8] = &[0x09, 0xf0];
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02];

    /// Annex B bytes: each NAL unit after its start code.
    fn annex_b(units: &[(&[u8], &[u8])]) -> Vec<u8> {
        units.iter().flat_map(|(start_code, unit)| [*start_code, *unit].concat()).collect()
    }

    /// An access unit as it should come out: 4-byte start codes, no delimiter.
    fn unit(units: &[&[u8]], keyframe: bool) -> AccessUnit {
        AccessUnit { data: units.iter().flat_map(|unit| [LONG, *unit].concat()).collect(), keyframe }
    }

    /// Feeds `bytes` in chunks of `chunk` bytes and collects every access unit, the last
    /// one included.
    fn split(bytes: &[u8], chunk: usize) -> Vec<AccessUnit> {
        let mut units = AccessUnits::default();
        let mut found = Vec::new();
        for piece in bytes.chunks(chunk) {
            units.push(piece);
            found.extend(std::iter::from_fn(|| units.next_unit()));
        }
        found.extend(units.last_unit());
        found
    }

    #[test]
    fn a_stream_splits_at_its_delimiters_however_it_arrives() {
        let bytes = annex_b(&[
            (LONG, AUD),
            (LONG, SPS),
            (LONG, PPS),
            (SHORT, IDR),
            (SHORT, AUD),
            (SHORT, SLICE),
            (LONG, AUD),
            (LONG, SLICE),
        ]);
        let expected = [unit(&[SPS, PPS, IDR], true), unit(&[SLICE], false), unit(&[SLICE], false)];
        for chunk in [1, 2, 3, 5, 7, bytes.len()] {
            assert_eq!(split(&bytes, chunk), expected, "read {chunk} bytes at a time");
        }
    }

    #[test]
    fn a_unit_is_returned_only_once_the_next_delimiter_closes_it() {
        let mut units = AccessUnits::default();
        units.push(&annex_b(&[(LONG, AUD), (LONG, SPS), (LONG, PPS), (LONG, IDR)]));
        assert_eq!(units.next_unit(), None);
        units.push(&annex_b(&[(LONG, AUD)]));
        assert_eq!(units.next_unit(), Some(unit(&[SPS, PPS, IDR], true)));
        assert_eq!(units.next_unit(), None);
        assert_eq!(units.last_unit(), None, "a lone delimiter is no frame");
    }

    #[test]
    fn a_keyframe_without_parameter_sets_gets_the_latest_ones() {
        let bytes = annex_b(&[
            (LONG, AUD),
            (LONG, SPS),
            (LONG, PPS),
            (LONG, IDR),
            (LONG, AUD),
            (LONG, SLICE),
            (LONG, AUD),
            (LONG, IDR),
        ]);
        let units = split(&bytes, 4);
        assert_eq!(units.len(), 3);
        assert_eq!(units[2], unit(&[SPS, PPS, IDR], true));
    }

    #[test]
    fn trailing_zero_bytes_are_not_part_of_a_unit() {
        let bytes = annex_b(&[(LONG, AUD), (LONG, SLICE), (&[0, 0], &[]), (LONG, AUD), (SHORT, SLICE)]);
        assert_eq!(split(&bytes, 3), [unit(&[SLICE], false), unit(&[SLICE], false)]);
    }

    fn h264_stream() -> Probed {
        Probed { width: 640, height: 360, frame_rate: 30.0, codec: "h264".into(), pixel_format: "yuv420p".into() }
    }

    /// `count` packets at 30 fps, a keyframe every `interval` of them.
    fn packets(count: usize, interval: usize) -> Vec<ProbedPacket> {
        (0..count).map(|n| ProbedPacket { shown_at: n as f64 / 30.0, keyframe: n % interval == 0 }).collect()
    }

    #[test]
    fn a_file_with_frequent_keyframes_and_no_b_frames_is_sent_as_it_is() {
        assert_eq!(why_not_sent_as_is(&h264_stream(), &packets(300, 15)), None);
        assert_eq!(why_not_sent_as_is(&h264_stream(), &packets(300, 60)), None, "exactly 2 s apart");
        assert_eq!(why_not_sent_as_is(&h264_stream(), &packets(45, 300)), None, "a file shorter than 2 s");
    }

    #[test]
    fn the_reason_a_file_is_encoded_again_is_named() {
        let reason = |stream: &Probed, packets: &[ProbedPacket]| why_not_sent_as_is(stream, packets).unwrap();
        let hevc = Probed { codec: "hevc".into(), ..h264_stream() };
        assert_eq!(reason(&hevc, &packets(300, 15)), "its video is hevc, not H.264");
        let ten_bit = Probed { pixel_format: "yuv420p10le".into(), ..h264_stream() };
        assert!(reason(&ten_bit, &packets(300, 15)).starts_with("its pictures are yuv420p10le"));

        let mut reordered = packets(300, 15);
        reordered.swap(2, 3);
        assert!(reason(&h264_stream(), &reordered).contains("B-frames"));

        assert!(reason(&h264_stream(), &packets(300, 250)).starts_with("its keyframes come up to 8.3 s apart"));
        assert!(reason(&h264_stream(), &packets(300, 90)).starts_with("its keyframes come up to 3.0 s apart"));
        let late_first = packets(300, 250).split_off(1);
        assert!(reason(&h264_stream(), &late_first).starts_with("its keyframes come up to 8.3 s apart"));
        let no_keyframe: Vec<ProbedPacket> =
            packets(300, 15).into_iter().map(|packet| ProbedPacket { keyframe: false, ..packet }).collect();
        assert_eq!(reason(&h264_stream(), &no_keyframe), "no keyframe in its first seconds");
        assert_eq!(reason(&h264_stream(), &[]), "no keyframe in its first seconds");
    }
}
