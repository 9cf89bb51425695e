//! A light viewer for load tests: a real WebRTC peer (ICE, DTLS, SRTP, RTCP feedback) that
//! does not decode. It receives RTP packets and measures what a viewer would experience:
//! time to first frame (and to the answer and the connection on the way), frames per
//! second (by RTP timestamp and marker bit), packet loss (sequence numbers never received,
//! after retransmission) and bytes. Thousands run in one process, each a task on the
//! caller's tokio runtime with its own UDP socket.
//!
//! With [`Reception::HeadersOnly`] a viewer counts RTP from its clear header and skips the
//! WebRTC stack's receive path (SRTP decryption, retransmission requests), so one machine
//! can hold more viewers while still seeing every packet the server sends.
//!
//! [`watch_decoding`] is the other kind: a viewer that decodes every picture, as a player
//! does, at the cost of a decoder. A few among many light viewers check that what the
//! light ones count is also what a player could show.

use std::io::IoSliceMut;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, UdpSocketState};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::viewer::{Endpoint, Negotiated, Viewer, ViewerError, negotiate};

/// How a load viewer takes in the media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reception {
    /// Every packet goes through the WebRTC stack, as in a real client: SRTP decrypted and
    /// authenticated, lost packets asked for again (NACK), receiver reports sent.
    #[default]
    Full,
    /// RTP is counted from its header, which SRTP leaves in the clear, and not handed on:
    /// nothing is decrypted and nothing lost is asked for again, so loss is what the
    /// network lost. STUN, DTLS and RTCP still go through the stack, which keeps the
    /// session alive. It halves the load generator's CPU (measured at 250 viewers).
    HeadersOnly,
}

/// What one viewer saw.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// From posting the offer to receiving the answer.
    pub answer: Duration,
    /// From posting the offer to the connection being ready for media (ICE checked, DTLS
    /// done, SRTP keyed).
    pub connected: Option<Duration>,
    /// From posting the offer to the last packet of the first complete frame.
    pub first_frame: Option<Duration>,
    /// Complete frames (RTP marker bit) received during the measuring window.
    pub frames: u64,
    /// Frames per second over the measuring window.
    pub fps: f64,
    /// RTP packets received during the window (duplicates once).
    pub packets: u64,
    /// Packets of the window's sequence range that never arrived, as a fraction.
    pub loss: f64,
    /// RTP payload and header bytes received during the window (with
    /// [`Reception::HeadersOnly`], whole SRTP packets, authentication tag included).
    pub bytes: u64,
}

/// What a viewer that decodes every picture saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedReport {
    /// From posting the offer to the first picture decoded.
    pub first_picture: Option<Duration>,
    /// Pictures decoded during the measuring window.
    pub pictures: u64,
    /// Pictures decoded per second over the measuring window.
    pub fps: f64,
}

/// When a load test measures: viewers connect before `start` and are measured until `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The start of measuring.
    pub start: Instant,
    /// The end of measuring; the viewer leaves then.
    pub end: Instant,
}

/// Each viewer's socket receive buffer (Linux doubles it for its own bookkeeping).
const RECEIVE_BUFFER: usize = 1 << 20;

/// Room for one read: with receive offload a read may return a whole run of same-sized
/// datagrams (a frame's packets) at once, up to the largest IP datagram.
const READ_BUFFER: usize = 1 << 16;

/// Connects one viewer to `endpoint`, receiving on `local_ip` (the address the server is
/// reached from: [`Endpoint::local_ip`], found once for all viewers), receives until the
/// window ends, and reports. A WHEP viewer then ends its session with `DELETE`, as a player
/// does.
///
/// It reads with UDP receive offload (GRO) where the system has it: the datagrams of a
/// frame that arrive back to back come up in one read, as in a real client on a busy
/// machine, so a thousand viewers in one process cost the machine little beyond what the
/// server sends them.
pub async fn watch(
    endpoint: &Endpoint,
    local_ip: IpAddr,
    window: Window,
    reception: Reception,
) -> Result<LoadReport, ViewerError> {
    let Negotiated { mut rtc, socket, local, offered_at, answered_at, session, .. } =
        negotiate(endpoint, local_ip, true, Protocol::Udp).await?;
    socket.set_nonblocking(true)?;
    // Room for a few frames' packets while a thousand viewers share two cores: a viewer
    // waiting for its turn should not lose what the server already sent it.
    socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER)?;
    let offload = UdpSocketState::new((&socket).into())?;
    let socket = UdpSocket::from_std(socket)?;
    let mut seen = Seen { offered_at, window, tally: Tally::default(), connected: None, first_frame: None };
    let mut sequence = SequenceExtender::default();
    let mut video_ssrc = None;
    let mut buffer = vec![0u8; READ_BUFFER];
    while rtc.is_alive() && Instant::now() < window.end {
        let deadline = seen.drain(&mut rtc, &socket).await?;
        let now = Instant::now();
        if now >= deadline {
            rtc.handle_input(Input::Timeout(now))?;
            continue;
        }
        let mut meta = [RecvMeta::default()];
        let read = socket.try_io(Interest::READABLE, || {
            offload.recv((&socket).into(), &mut [IoSliceMut::new(&mut buffer)], &mut meta)
        });
        match read {
            Ok(_) => {
                let [meta] = meta;
                for datagram in buffer[..meta.len].chunks(meta.stride.max(1)) {
                    if reception == Reception::HeadersOnly
                        && let Some(header) = RtpHeader::parse(datagram)
                    {
                        // The video's own packets: the first to end a frame names its
                        // stream; padding and probes (another stream, no marker) are not
                        // video, and have sequence numbers of their own.
                        if header.marker {
                            video_ssrc.get_or_insert(header.ssrc);
                        }
                        if video_ssrc == Some(header.ssrc) {
                            seen.packet(now, sequence.extend(header.sequence), header.marker, datagram.len());
                        }
                        continue;
                    }
                    let Ok(contents) = datagram.try_into() else { continue };
                    let receive = Receive { proto: Protocol::Udp, source: meta.addr, destination: local, contents };
                    rtc.handle_input(Input::Receive(now, receive))?;
                    // str0m holds one received packet until it is polled.
                    seen.drain(&mut rtc, &socket).await?;
                }
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error.into()),
        }
        let wake = tokio::time::Instant::from_std(deadline.min(window.end));
        tokio::select! {
            ready = socket.readable() => ready?,
            () = tokio::time::sleep_until(wake) => rtc.handle_input(Input::Timeout(Instant::now()))?,
        }
    }
    rtc.disconnect();
    if let Some(session) = session {
        // The server times the viewer out anyway if this fails.
        let _ = session.end().await;
    }
    let seconds = (window.end - window.start).as_secs_f64();
    Ok(seen.tally.report(answered_at - offered_at, seen.connected, seen.first_frame, seconds))
}

/// What one viewer has seen so far.
struct Seen {
    offered_at: Instant,
    window: Window,
    tally: Tally,
    connected: Option<Duration>,
    first_frame: Option<Duration>,
}

impl Seen {
    /// Takes everything the session has to give until its next deadline, which it returns:
    /// packets are sent, received RTP is counted.
    async fn drain(&mut self, rtc: &mut Rtc, socket: &UdpSocket) -> Result<Instant, ViewerError> {
        loop {
            match rtc.poll_output()? {
                Output::Timeout(deadline) => return Ok(deadline),
                Output::Transmit(transmit) => {
                    // A candidate that cannot be reached fails its checks; ICE tries the others.
                    // Awaited, not tried: a socket just handed to the runtime does not count
                    // as writable until the runtime has polled it, and a handshake packet
                    // dropped then costs a retransmission timeout.
                    if let Err(error) = socket.send_to(&transmit.contents, transmit.destination).await {
                        tracing::debug!(%error, destination = %transmit.destination, "send failed");
                    }
                }
                Output::Event(Event::Connected) => {
                    self.connected.get_or_insert(self.offered_at.elapsed());
                }
                Output::Event(Event::RtpPacket(packet)) => {
                    let bytes = packet.payload.len() + packet.header.header_len;
                    self.packet(Instant::now(), *packet.seq_no, packet.header.marker, bytes);
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Counts one RTP packet received at `now`, if in the window; the first marker ends
    /// the first frame.
    fn packet(&mut self, now: Instant, sequence_number: u64, marker: bool, bytes: usize) {
        if marker && self.first_frame.is_none() {
            self.first_frame = Some(now - self.offered_at);
        }
        if (self.window.start..self.window.end).contains(&now) {
            self.tally.count(sequence_number, marker, bytes);
        }
    }
}

/// What a load viewer reads of an RTP packet's clear header.
#[derive(Debug, PartialEq, Eq)]
struct RtpHeader {
    sequence: u16,
    marker: bool,
    ssrc: u32,
}

impl RtpHeader {
    /// The header of an RTP packet; `None` for anything else (STUN, DTLS, RTCP, whose
    /// packet types 192–223 sit where RTP's marker and payload type are, RFC 5761).
    fn parse(datagram: &[u8]) -> Option<RtpHeader> {
        let &[first, second, high, low, _, _, _, _, s0, s1, s2, s3, ..] = datagram else {
            return None;
        };
        let rtp = first >> 6 == 2 && !(64..=95).contains(&(second & 0x7f));
        rtp.then(|| RtpHeader {
            sequence: u16::from_be_bytes([high, low]),
            marker: second & 0x80 != 0,
            ssrc: u32::from_be_bytes([s0, s1, s2, s3]),
        })
    }
}

/// Turns 16-bit RTP sequence numbers into ever-growing ones across wraps, taking each to
/// be the nearest to the last (packets arrive at most a little out of order).
#[derive(Debug, Default)]
struct SequenceExtender {
    last: Option<u64>,
}

impl SequenceExtender {
    fn extend(&mut self, sequence: u16) -> u64 {
        let extended = match self.last {
            None => u64::from(sequence) + (1 << 16),
            Some(last) => {
                let step = i64::from(sequence.wrapping_sub(last as u16) as i16);
                last.saturating_add_signed(step)
            }
        };
        self.last = Some(extended);
        extended
    }
}

/// Counts of one viewer's measuring window.
#[derive(Debug, Default)]
struct Tally {
    sequence_numbers: SequenceSet,
    frames: u64,
    bytes: u64,
}

impl Tally {
    fn count(&mut self, sequence_number: u64, marker: bool, bytes: usize) {
        if self.sequence_numbers.insert(sequence_number) {
            self.frames += u64::from(marker);
            self.bytes += bytes as u64;
        }
    }

    /// The report of a viewer with these times to its answer, connection and first frame,
    /// measured for `seconds`.
    fn report(
        &self,
        answer: Duration,
        connected: Option<Duration>,
        first_frame: Option<Duration>,
        seconds: f64,
    ) -> LoadReport {
        let packets = self.sequence_numbers.len();
        let range = self.sequence_numbers.range().map_or(0, |(low, high)| high - low + 1);
        LoadReport {
            answer,
            connected,
            first_frame,
            frames: self.frames,
            fps: self.frames as f64 / seconds,
            packets,
            loss: if range == 0 { 0.0 } else { (range - packets) as f64 / range as f64 },
            bytes: self.bytes,
        }
    }
}

/// The extended sequence numbers a viewer received, one bit each from the lowest. A
/// window's numbers are nearly consecutive, so this takes a few hundred bytes a viewer and
/// no hashing: with a thousand viewers in one process, a hash set of them was a tenth of
/// the load generator's CPU, taken from the cores the server shares.
#[derive(Debug, Default)]
struct SequenceSet {
    /// The number of the first bit of `words` (a multiple of 64).
    base: u64,
    words: Vec<u64>,
}

impl SequenceSet {
    /// Adds `number`; false if it was there already.
    fn insert(&mut self, number: u64) -> bool {
        let aligned = number - number % 64;
        if self.words.is_empty() {
            self.base = aligned;
        } else if aligned < self.base {
            let missing = ((self.base - aligned) / 64) as usize;
            self.words.splice(0..0, std::iter::repeat_n(0, missing));
            self.base = aligned;
        }
        let word = ((aligned - self.base) / 64) as usize;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1 << (number % 64);
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        true
    }

    fn len(&self) -> u64 {
        self.words.iter().map(|word| u64::from(word.count_ones())).sum()
    }

    /// The lowest and highest numbers in the set.
    fn range(&self) -> Option<(u64, u64)> {
        let first = self.words.iter().position(|&word| word != 0)?;
        let last = self.words.iter().rposition(|&word| word != 0)?;
        let lowest = self.base + first as u64 * 64 + u64::from(self.words[first].trailing_zeros());
        let highest = self.base + last as u64 * 64 + 63 - u64::from(self.words[last].leading_zeros());
        Some((lowest, highest))
    }
}

/// Connects a viewer that decodes every picture (OpenH264, in a thread of its own) to
/// `endpoint`, receiving on `local_ip`, and counts the pictures it decodes until the
/// window ends. A WHEP viewer then ends its session with `DELETE`.
pub async fn watch_decoding(
    endpoint: &Endpoint,
    local_ip: IpAddr,
    window: Window,
) -> Result<DecodedReport, ViewerError> {
    let offered_at = Instant::now();
    let mut viewer = Viewer::connect_from(endpoint, local_ip).await?;
    let mut first_picture = None;
    let mut pictures = 0;
    while let Some(left) = window.end.checked_duration_since(Instant::now()) {
        let Some(picture) = viewer.next_frame(left).await else {
            break;
        };
        first_picture.get_or_insert(picture.arrived_at.saturating_duration_since(offered_at));
        pictures += u64::from(picture.arrived_at >= window.start);
    }
    if let Some(session) = viewer.session() {
        let _ = session.end().await;
    }
    // Stopping joins the viewer's thread, which ends within one of its loop's turns.
    let _ = tokio::task::spawn_blocking(move || viewer.close()).await;
    let seconds = window.end.saturating_duration_since(window.start).as_secs_f64();
    Ok(DecodedReport { first_picture, pictures, fps: pictures as f64 / seconds.max(f64::EPSILON) })
}

/// The value at fraction `at` of `values` (0: the smallest, 0.5: the median, 1: the
/// largest), sorting them in place; 0 when there are none.
pub fn percentile(values: &mut [f64], at: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let Some(last) = values.len().checked_sub(1) else {
        return 0.0;
    };
    values[(last as f64 * at.clamp(0.0, 1.0)).round() as usize]
}

/// What [`make_room_for`] found and did about the limit on open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit before.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
    /// About how many the viewers need.
    pub needed: u64,
}

/// Makes room for `viewers` light viewers in this process: each holds a UDP socket, and
/// an HTTP connection while it joins, so a thousand need more than the usual soft limit
/// on open files (1024 on Linux), and the last would fail to join. Raises the soft limit
/// to the hard one when they need more than it allows.
pub fn make_room_for(viewers: usize) -> std::io::Result<OpenFiles> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // A socket each, a connection each for those joining at once, and the process's own.
    let needed = viewers as u64 * 2 + 64;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let now = if soft < needed && soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        hard
    } else {
        soft
    };
    Ok(OpenFiles { was: soft, now, needed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_sequence_numbers_never_received_and_ignores_duplicates() {
        let mut tally = Tally::default();
        for (sequence_number, marker) in [(10, false), (11, true), (11, true), (13, true), (14, false)] {
            tally.count(sequence_number, marker, 100);
        }
        let report = tally.report(Duration::ZERO, None, None, 1.0);
        assert_eq!((report.packets, report.frames, report.bytes), (4, 2, 400));
        assert!((report.loss - 0.2).abs() < 1e-9, "one of five missing: {}", report.loss);
    }

    #[test]
    fn a_sequence_set_holds_each_number_once_whatever_the_order() {
        let mut set = SequenceSet::default();
        let numbers = [70_000, 70_001, 69_990, 70_200, 69_000, 70_001, 69_990, 70_063, 70_064];
        let inserted: Vec<bool> = numbers.into_iter().map(|number| set.insert(number)).collect();
        assert_eq!(inserted, [true, true, true, true, true, false, false, true, true]);
        assert_eq!((set.len(), set.range()), (7, Some((69_000, 70_200))));
        for number in [69_000, 69_990, 70_000, 70_001, 70_063, 70_064, 70_200] {
            assert!(!set.insert(number), "{number} was inserted");
        }
        assert!(set.insert(69_001) && set.insert(70_199));
        assert_eq!(set.len(), 9);
    }

    #[test]
    fn rtp_headers_are_told_from_rtcp_stun_and_dtls() {
        let mut rtp = [0u8; 20];
        rtp[..4].copy_from_slice(&[0x80, 0x80 | 102, 0x12, 0x34]);
        rtp[8..12].copy_from_slice(&[0, 0, 0, 7]);
        assert_eq!(RtpHeader::parse(&rtp), Some(RtpHeader { sequence: 0x1234, marker: true, ssrc: 7 }));
        rtp[1] = 102;
        assert_eq!(RtpHeader::parse(&rtp), Some(RtpHeader { sequence: 0x1234, marker: false, ssrc: 7 }));
        let mut sender_report = rtp;
        sender_report[1] = 200;
        assert_eq!(RtpHeader::parse(&sender_report), None);
        let (mut stun, mut dtls) = (rtp, rtp);
        (stun[0], dtls[0]) = (0x00, 22);
        assert_eq!((RtpHeader::parse(&stun), RtpHeader::parse(&dtls)), (None, None));
        assert_eq!(RtpHeader::parse(&rtp[..11]), None, "shorter than a header");
    }

    #[test]
    fn sequence_numbers_keep_growing_across_the_wrap_and_reordering() {
        let mut extender = SequenceExtender::default();
        let extended: Vec<u64> = [65534, 65535, 1, 0, 2].into_iter().map(|seq| extender.extend(seq)).collect();
        let base = extended[0];
        assert_eq!(extended.iter().map(|seq| seq - base).collect::<Vec<_>>(), [0, 1, 3, 2, 4]);
    }
}
