//! H.264 read through ffmpeg and sent to viewers as it is: files (local, or fetched over
//! HTTP(S), HLS included) and live network streams (`udp://`, `srt://`, `rtmp://`). ffmpeg
//! copies the H.264 to a pipe without decoding it (a file as fast as it is read, handed out
//! at its frame rate; a live stream as it comes), and each access unit goes to every viewer
//! untouched, in Annex B. No decoder
//! and no encoder run: the server's cost is reading the input and sending packets.
//!
//! ffmpeg writes FLV, where each frame is a tag that gives its length: a frame is passed
//! on as soon as its tag is complete. (In a raw Annex B stream a frame ends only where the
//! next one starts, which held every frame back by a frame interval, ~33 ms at 30 fps.)
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
//!
//! Checking a live stream takes 5 s of it. Rather than wait, a live stream plays decoded
//! and encoded at once while [`PendingH264`] checks it in the background; once its H.264
//! has passed and its first keyframe is in, the stream goes on from that keyframe passing
//! it through.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::connections::LiveConnections;
use super::ffmpeg::{FfmpegRun, PacedBy};
use super::ffmpeg_process::{FfmpegInput, Probed, STREAM_ENTRIES, ffmpeg_reading, ffprobe, open_error, read_error};
use super::pace::Pacer;
use super::{EncodedSource, SourceError};
use crate::encode::EncodedFrame;

/// The longest keyframe interval a file may have and still be sent as it is (an IP
/// camera's usual one): the most video a viewer that joins, or loses data, is sent at
/// once.
pub const MAX_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// How much of a file (from its start) is checked for B-frames and keyframe spacing.
const CHECKED_SPAN: &str = "%+10";

/// How much of a live stream is checked: the time it plays decoded and encoded before
/// passing through.
const CHECKED_SPAN_LIVE: &str = "%+5";

/// How long ffmpeg studies a live stream before passing it on (its default, 5 s, would
/// delay the start by that much and then send the 5 s it held in one burst). A second
/// finds an H.264 stream's parameters; nothing is decoded.
const LIVE_ANALYSIS: [&str; 2] = ["-analyzeduration", "1000000"];

/// How much a keyframe interval may exceed [`MAX_KEYFRAME_INTERVAL`] by (timestamp
/// rounding in containers).
const INTERVAL_TOLERANCE: f64 = 0.01;

/// Bytes asked of the pipe per read.
const READ_SIZE: usize = 64 * 1024;

/// FLV's file header (signature, version, flags, header size) and the size of the tag
/// before the first, which is zero (FLV specification, version 10, annex E).
const FLV_HEADER: usize = 9 + 4;
/// A tag's header (type, data size, timestamp, stream id) and, after its data, its size.
const FLV_TAG_HEADER: usize = 11;
const FLV_TAG_TRAILER: usize = 4;
/// The tag type of video.
const FLV_VIDEO_TAG: u8 = 9;
/// The codec id of H.264 (AVC) in a video tag's first byte.
const FLV_AVC: u8 = 7;
/// A video tag's header: frame type and codec, packet type, composition time.
const FLV_AVC_HEADER: usize = 5;
/// AVC packet types: the decoder configuration record, and frames.
const FLV_AVC_CONFIGURATION: u8 = 0;
const FLV_AVC_FRAME: u8 = 1;

/// NAL unit types (ITU-T H.264, table 7-1).
const NAL_IDR_SLICE: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_ACCESS_UNIT_DELIMITER: u8 = 9;

/// H.264 video read in real time as access units (Annex B, SPS and PPS before each
/// keyframe, no delimiters).
#[derive(Debug)]
pub struct FfmpegH264Source {
    child: FfmpegRun,
    paced_by: PacedBy,
    /// For a file, which is paced by its reader ([`PacedBy::Reader`]).
    pacer: Option<Pacer>,
    units: FlvAccessUnits,
    buffer: Vec<u8>,
    width: u32,
    height: u32,
    frame_rate: f64,
}

impl FfmpegH264Source {
    /// Checks that the video of `input` (a file or URL ffmpeg reads; `live` when it paces
    /// itself, as a network stream does; a URL over HTTP(S) with neither a duration nor a
    /// length is live too) can go to browsers as it is, and starts reading it.
    /// [`SourceError::Unsupported`] says why not when it cannot.
    pub fn open(input: &str, live: bool) -> Result<Self, SourceError> {
        let input_options = if live { LIVE_ANALYSIS.map(str::to_owned).to_vec() } else { Vec::new() };
        FfmpegH264Source::open_input(FfmpegInput::direct(input, &input_options), live)
    }

    /// Lets `connections` stop the source's ffmpeg from another thread.
    pub(super) fn joining(mut self, connections: &LiveConnections) -> Self {
        self.child.join(connections);
        self
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
        let paced_by = PacedBy::of(&input, &probed, live);
        let mut command = ffmpeg_reading(&input, paced_by.input_options());
        command.args(["-c:v", "copy", "-flush_packets", "1"]);
        command.args(["-flvflags", "no_sequence_end+no_metadata+no_duration_filesize", "-f", "flv", "pipe:1"]);
        // A file waits to be prepared or read (see `FfmpegRun`), and is paced by its reader.
        let child = FfmpegRun::start(&input, command, paced_by == PacedBy::Reader)?;
        let pacer = paced_by.pacer(probed.frame_rate);
        tracing::debug!(
            input = input.spec(),
            width = probed.width,
            height = probed.height,
            ?paced_by,
            "ffmpeg ready to copy H.264"
        );
        Ok(FfmpegH264Source {
            child,
            paced_by,
            pacer,
            units: FlvAccessUnits::default(),
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
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        loop {
            let unit = self.units.next_unit().map_err(|reason| read_error(self.child.spec(), reason))?;
            if let Some(unit) = unit {
                return Ok(Some(self.frame(unit)));
            }
            let read = self.child.read(&mut self.buffer)?;
            if read == 0 {
                // A tag cut short by the end is no frame.
                self.child.finish()?;
                return Ok(None);
            }
            self.units.push(&self.buffer[..read]);
        }
    }

    fn prepare(&mut self) -> Result<(), SourceError> {
        self.child.prepare()
    }

    fn stop(&mut self) {
        self.child.stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        Some(self.frame_rate)
    }

    fn is_live(&self) -> bool {
        self.paced_by.is_live()
    }
}

/// The H.264 of a live stream, checked on a thread of its own while the stream plays
/// decoded ([`super::open::OpenedSource::FramesUntilH264`]). The thread ends when the check
/// fails or the stream ends, and once the source is ready; a source nobody takes is
/// dropped, its ffmpeg with it.
#[derive(Debug)]
pub struct PendingH264 {
    ready: mpsc::Receiver<Box<dyn EncodedSource>>,
}

impl PendingH264 {
    /// Starts checking `input`, a live stream.
    pub(super) fn check(input: FfmpegInput) -> Result<PendingH264, SourceError> {
        let (send_ready, ready) = mpsc::channel();
        let spec = input.spec().to_owned();
        let thread_error = |error| open_error(&spec, format!("could not start a thread: {error}"));
        thread::Builder::new()
            .name("webgear-h264-check".into())
            .spawn(move || {
                let source = match FfmpegH264Source::open_input(input, true) {
                    Ok(source) => source,
                    Err(SourceError::Unsupported { spec, reason }) => {
                        return log_not_passed_through(&spec, &reason);
                    }
                    Err(error) => return tracing::debug!(%error, "the H.264 check of a live stream ended"),
                };
                if let Some(primed) = PrimedH264::from_first_keyframe(source) {
                    // Nobody waiting means the stream has moved on.
                    let _ = send_ready.send(Box::new(primed) as Box<dyn EncodedSource>);
                }
            })
            .map_err(thread_error)?;
        Ok(PendingH264 { ready })
    }

    /// The H.264 source once the stream has passed its check, its next access unit a
    /// keyframe; `None` while the check runs, and for good when the stream cannot be
    /// passed through or has ended.
    pub fn ready(&self) -> Option<Box<dyn EncodedSource>> {
        self.ready.try_recv().ok()
    }
}

/// How long a read of a live stream must wait for its frame for the stream to count as
/// caught up: a frame already there comes at once.
const WAITED_FOR_LIVE: Duration = Duration::from_millis(10);

/// An H.264 source whose first live keyframe has been read ahead, to be handed out first.
struct PrimedH264 {
    first: Option<EncodedFrame>,
    source: FfmpegH264Source,
}

impl PrimedH264 {
    /// Reads `source` up to its first keyframe that is live (dropping what comes before);
    /// `None` if it ends or fails first. ffmpeg starts with the frames it studied the
    /// stream on, up to a second old, in one burst: a keyframe among them would take the
    /// stream's viewers back in time, so it counts only once a read has had to wait.
    fn from_first_keyframe(mut source: FfmpegH264Source) -> Option<PrimedH264> {
        let (mut caught_up, mut first_read) = (false, true);
        loop {
            let asked = Instant::now();
            let unit = source.read().ok()??;
            // The first read waits for ffmpeg to start.
            caught_up |= !first_read && asked.elapsed() >= WAITED_FOR_LIVE;
            first_read = false;
            if caught_up && unit.keyframe {
                return Some(PrimedH264 { first: Some(unit), source });
            }
        }
    }
}

impl EncodedSource for PrimedH264 {
    fn read(&mut self) -> Result<Option<EncodedFrame>, SourceError> {
        match self.first.take() {
            // Read ahead: stamped when handed out, so that it follows the frames sent
            // meanwhile.
            Some(first) => Ok(Some(EncodedFrame { captured_at: Instant::now(), ..first })),
            None => self.source.read(),
        }
    }

    fn stop(&mut self) {
        self.source.stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        self.source.frame_rate()
    }

    fn is_live(&self) -> bool {
        self.source.is_live()
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

/// Why video in `codec` cannot go to browsers as it is.
pub(super) fn not_h264(codec: &str) -> String {
    format!("its video is {codec}, not H.264")
}

/// Why a file with this stream and these first packets cannot go to browsers as it is,
/// or `None` when it can.
fn why_not_sent_as_is(stream: &Probed, packets: &[ProbedPacket]) -> Option<String> {
    if stream.codec != "h264" {
        return Some(not_h264(&stream.codec));
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

/// Reads the FLV ffmpeg writes, tag by tag, into access units: every frame's NAL units
/// with 4-byte start codes, its delimiters dropped (they would cost every viewer a packet
/// per frame). A keyframe without its own SPS and PPS gets the latest ones seen (in the
/// decoder configuration or in a frame), so that a viewer can start from any keyframe.
#[derive(Debug)]
struct FlvAccessUnits {
    /// Bytes received and not yet read.
    pending: Vec<u8>,
    header_read: bool,
    /// Bytes in each NAL unit's length prefix, from the decoder configuration.
    length_size: usize,
    last_sps: Option<Vec<u8>>,
    last_pps: Option<Vec<u8>>,
}

impl Default for FlvAccessUnits {
    fn default() -> Self {
        FlvAccessUnits { pending: Vec::new(), header_read: false, length_size: 4, last_sps: None, last_pps: None }
    }
}

impl FlvAccessUnits {
    fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next access unit whose tag is complete; `Err` names what is not FLV or H.264.
    fn next_unit(&mut self) -> Result<Option<AccessUnit>, String> {
        if !self.header_read {
            if self.pending.len() < FLV_HEADER {
                return Ok(None);
            }
            if !self.pending.starts_with(b"FLV") {
                return Err("ffmpeg's output is not FLV".into());
            }
            self.pending.drain(..FLV_HEADER);
            self.header_read = true;
        }
        loop {
            let Some(header) = self.pending.get(..FLV_TAG_HEADER) else { return Ok(None) };
            let (tag_type, size) = (header[0] & 0x1f, be_number(&header[1..4]));
            let tag_end = FLV_TAG_HEADER + size + FLV_TAG_TRAILER;
            if self.pending.len() < tag_end {
                return Ok(None);
            }
            let tag: Vec<u8> = self.pending.drain(..tag_end).collect();
            let data = &tag[FLV_TAG_HEADER..FLV_TAG_HEADER + size];
            if tag_type != FLV_VIDEO_TAG || data.len() < FLV_AVC_HEADER {
                continue;
            }
            if data[0] & 0x0f != FLV_AVC {
                return Err(format!("ffmpeg's FLV carries video codec {}, not H.264", data[0] & 0x0f));
            }
            let body = &data[FLV_AVC_HEADER..];
            match data[1] {
                FLV_AVC_CONFIGURATION => self.configure(body),
                FLV_AVC_FRAME => {
                    let units = length_prefixed_units(body, self.length_size);
                    if let Some(unit) = self.assemble(&units) {
                        return Ok(Some(unit));
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes the NAL unit length size and the first SPS and PPS from an AVC decoder
    /// configuration record (ISO/IEC 14496-15, 5.3.3.1). A malformed one changes nothing
    /// it does not reach.
    fn configure(&mut self, record: &[u8]) {
        let Some(&[_, _, _, _, length_size, sps_count]) = record.get(..6) else { return };
        self.length_size = usize::from(length_size & 0x03) + 1;
        let mut at = 6;
        let next_set = |at: &mut usize| -> Option<Vec<u8>> {
            let length = be_number(record.get(*at..*at + 2)?);
            let set = record.get(*at + 2..*at + 2 + length)?.to_vec();
            *at += 2 + length;
            Some(set)
        };
        for index in 0..sps_count & 0x1f {
            match next_set(&mut at) {
                Some(sps) if index == 0 => self.last_sps = Some(sps),
                Some(_) => {}
                None => return,
            }
        }
        let Some(&pps_count) = record.get(at) else { return };
        at += 1;
        for index in 0..pps_count {
            match next_set(&mut at) {
                Some(pps) if index == 0 => self.last_pps = Some(pps),
                Some(_) => {}
                None => return,
            }
        }
    }

    /// An access unit from a frame's NAL units, `None` when it holds nothing but
    /// delimiters.
    fn assemble(&mut self, units: &[&[u8]]) -> Option<AccessUnit> {
        let units: Vec<&[u8]> =
            units.iter().copied().filter(|unit| nal_type(unit) != NAL_ACCESS_UNIT_DELIMITER).collect();
        let has = |kind: u8| units.iter().any(|unit| nal_type(unit) == kind);
        let keyframe = has(NAL_IDR_SLICE);
        let mut data = Vec::with_capacity(units.iter().map(|unit| unit.len() + 4).sum::<usize>() + 64);
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

/// A big-endian unsigned number.
fn be_number(bytes: &[u8]) -> usize {
    bytes.iter().fold(0, |number, byte| number << 8 | usize::from(*byte))
}

fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |header| header & 0x1f)
}

/// The NAL units of a frame whose units each follow their length in `length_size` bytes;
/// a unit running past the end is dropped with the rest.
fn length_prefixed_units(mut data: &[u8], length_size: usize) -> Vec<&[u8]> {
    let mut units = Vec::new();
    while let Some(prefix) = data.get(..length_size) {
        let length = be_number(prefix);
        let Some(unit) = data.get(length_size..length_size + length) else { break };
        if !unit.is_empty() {
            units.push(unit);
        }
        data = &data[length_size + length..];
    }
    units
}

/// Says why a source's H.264 is decoded and encoded rather than passed through.
pub(super) fn log_not_passed_through(source: &str, reason: &str) {
    tracing::info!(source, reason, "decoding and encoding the source: its H.264 cannot go to viewers as it is");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    const AUD: &[u8] = &[0x09, 0xf0];
    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x21];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02];
    const NEW_SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f];

    /// An FLV file: its header, then `tags`.
    fn flv(tags: &[Vec<u8>]) -> Vec<u8> {
        [b"FLV\x01\x01\0\0\0\x09\0\0\0\0".as_slice(), &tags.concat()].concat()
    }

    /// A tag: its header (type, size, a zero timestamp and stream id), data and size.
    fn tag(tag_type: u8, data: &[u8]) -> Vec<u8> {
        let size = (data.len() as u32).to_be_bytes();
        let total = (11 + data.len() as u32).to_be_bytes();
        [&[tag_type, size[1], size[2], size[3], 0, 0, 0, 0, 0, 0, 0], data, &total].concat()
    }

    /// The decoder configuration record's tag, NAL units' lengths in `length_size` bytes.
    fn configuration(sps: &[u8], pps: &[u8], length_size: u8) -> Vec<u8> {
        let record = [
            &[1, sps[1], sps[2], sps[3], 0xfc | (length_size - 1), 0xe1],
            (sps.len() as u16).to_be_bytes().as_slice(),
            sps,
            &[1],
            &(pps.len() as u16).to_be_bytes(),
            pps,
        ]
        .concat();
        tag(FLV_VIDEO_TAG, &[&[0x17, FLV_AVC_CONFIGURATION, 0, 0, 0], record.as_slice()].concat())
    }

    /// A frame's tag: `units` after their lengths in `length_size` bytes.
    fn frame(units: &[&[u8]], length_size: usize) -> Vec<u8> {
        let mut data = vec![0x27, FLV_AVC_FRAME, 0, 0, 0];
        for unit in units {
            data.extend_from_slice(&(unit.len() as u32).to_be_bytes()[4 - length_size..]);
            data.extend_from_slice(unit);
        }
        tag(FLV_VIDEO_TAG, &data)
    }

    /// An access unit as it should come out: 4-byte start codes, no delimiter.
    fn unit(units: &[&[u8]], keyframe: bool) -> AccessUnit {
        AccessUnit { data: units.iter().flat_map(|unit| [&[0, 0, 0, 1], *unit].concat()).collect(), keyframe }
    }

    /// Feeds `bytes` in chunks of `chunk` bytes and collects every access unit.
    fn units_of(bytes: &[u8], chunk: usize) -> Vec<AccessUnit> {
        let mut units = FlvAccessUnits::default();
        let mut found = Vec::new();
        for piece in bytes.chunks(chunk) {
            units.push(piece);
            while let Some(unit) = units.next_unit().unwrap() {
                found.push(unit);
            }
        }
        found
    }

    #[test]
    fn frames_come_out_of_their_tags_however_the_pipe_cuts_them() {
        let bytes = flv(&[
            tag(18, b"onMetaData"),
            configuration(SPS, PPS, 4),
            frame(&[AUD, SPS, PPS, IDR], 4),
            tag(8, b"audio"),
            frame(&[AUD, SLICE], 4),
            frame(&[SLICE], 4),
        ]);
        let expected = [unit(&[SPS, PPS, IDR], true), unit(&[SLICE], false), unit(&[SLICE], false)];
        for chunk in [1, 2, 3, 5, 7, 11, bytes.len()] {
            assert_eq!(units_of(&bytes, chunk), expected, "read {chunk} bytes at a time");
        }
    }

    #[test]
    fn a_frame_is_passed_on_as_soon_as_its_tag_is_complete() {
        let mut units = FlvAccessUnits::default();
        let first = frame(&[IDR], 4);
        units.push(&flv(&[configuration(SPS, PPS, 4)]));
        units.push(&first[..first.len() - 1]);
        assert_eq!(units.next_unit(), Ok(None), "its tag's last byte is still to come");
        units.push(&first[first.len() - 1..]);
        assert_eq!(units.next_unit(), Ok(Some(unit(&[SPS, PPS, IDR], true))), "no need to wait for the next frame");
        assert_eq!(units.next_unit(), Ok(None));
    }

    #[test]
    fn a_keyframe_without_parameter_sets_gets_the_latest_ones() {
        let bytes = flv(&[
            configuration(SPS, PPS, 4),
            frame(&[IDR], 4),
            frame(&[SLICE], 4),
            frame(&[NEW_SPS, PPS, IDR], 4),
            frame(&[IDR], 4),
        ]);
        let units = units_of(&bytes, 4);
        assert_eq!(units[0], unit(&[SPS, PPS, IDR], true), "from the decoder configuration");
        assert_eq!(units[1], unit(&[SLICE], false), "only keyframes get them");
        assert_eq!(units[3], unit(&[NEW_SPS, PPS, IDR], true), "the latest, sent in a frame");
    }

    #[test]
    fn nal_unit_lengths_may_take_fewer_bytes() {
        let bytes = flv(&[configuration(SPS, PPS, 2), frame(&[IDR], 2), frame(&[AUD, SLICE], 2)]);
        assert_eq!(units_of(&bytes, 3), [unit(&[SPS, PPS, IDR], true), unit(&[SLICE], false)]);
    }

    #[test]
    fn what_is_not_flv_or_h264_is_named_and_a_cut_unit_dropped() {
        let mut not_flv = FlvAccessUnits::default();
        not_flv.push(&[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x65, 0x88, 0x84]);
        assert_eq!(not_flv.next_unit(), Err("ffmpeg's output is not FLV".into()));

        let mut vp6 = FlvAccessUnits::default();
        vp6.push(&flv(&[tag(FLV_VIDEO_TAG, &[0x14, 1, 0, 0, 0, 1, 2, 3])]));
        assert_eq!(vp6.next_unit(), Err("ffmpeg's FLV carries video codec 4, not H.264".into()));

        // A length running past the tag's end: that unit and what follows are dropped.
        let mut cut = frame(&[SLICE, IDR], 4);
        let last_length_at = 11 + 5 + 4 + SLICE.len() + 3;
        cut[last_length_at] = 200;
        assert_eq!(units_of(&flv(&[cut]), 5), [unit(&[SLICE], false)]);
    }

    fn h264_stream() -> Probed {
        Probed {
            width: 640,
            height: 360,
            frame_rate: 30.0,
            codec: "h264".into(),
            pixel_format: "yuv420p".into(),
            duration: Some(2.0),
            size: Some(400_000),
            format_name: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        }
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
