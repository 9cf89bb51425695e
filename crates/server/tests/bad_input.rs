//! Bad signalling input gets a 4xx that says what was wrong (a body that stops coming,
//! after 10 s); a connection whose request headers never end is closed; and a viewer that
//! is already watching keeps receiving frames throughout. Besides hand-picked cases,
//! hundreds of offers and trickled candidates mangled at random (from a fixed seed) go to
//! the signalling endpoints, and thousands of mangled STUN, DTLS and SRTCP datagrams to the
//! media port; nothing in the server may panic.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::Ipv4Addr;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, assert_increasing, exclusive, offer_sdp};
use reqwest::StatusCode;
use serde_json::json;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use webgear_testkit::Viewer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_get_a_clear_4xx_while_a_viewer_keeps_playing() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server.url("/offer")).await.unwrap();
    viewer.next_frame(Duration::from_secs(2)).await.expect("the viewer plays");

    let http = reqwest::Client::new();
    let audio_only = offer_sdp(&[(MediaKind::Audio, Direction::RecvOnly)]);
    let send_only_video = offer_sdp(&[(MediaKind::Video, Direction::SendOnly)]);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("not JSON", http.post(server.url("/offer")).body("hello"), StatusCode::BAD_REQUEST, "must be JSON"),
        (
            "JSON without sdp",
            http.post(server.url("/offer")).json(&json!({"type": "offer"})),
            StatusCode::BAD_REQUEST,
            "missing field `sdp`",
        ),
        (
            "wrong type",
            http.post(server.url("/offer")).json(&json!({"sdp": "v=0", "type": "answer"})),
            StatusCode::BAD_REQUEST,
            "\"type\" must be \"offer\"",
        ),
        (
            "garbage SDP",
            http.post(server.url("/offer")).json(&json!({"sdp": "this is not SDP", "type": "offer"})),
            StatusCode::BAD_REQUEST,
            "SDP offer could not be parsed",
        ),
        (
            "an offer with no video",
            http.post(server.url("/offer")).json(&json!({"sdp": audio_only, "type": "offer"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no video section",
        ),
        (
            "an offer that only sends video",
            http.post(server.url("/offer")).json(&json!({"sdp": send_only_video, "type": "offer"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no video section",
        ),
        (
            "a huge body",
            http.post(server.url("/offer")).body(vec![b'{'; 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        ("GET /offer", http.get(server.url("/offer")), StatusCode::METHOD_NOT_ALLOWED, ""),
        ("an unknown path", http.get(server.url("/nope/../x")), StatusCode::NOT_FOUND, ""),
    ];
    for (what, request, status, says) in cases {
        let response = common::send(request).await;
        assert_eq!(response.status(), status, "{what}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{what}: body {body:?} should say {says:?}");
    }

    // A flood of garbage offers does not disturb the viewer either.
    for _ in 0..200 {
        let response =
            http.post(server.url("/offer")).json(&json!({"sdp": "v=0\r\nx", "type": "offer"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert_increasing(&frames);
    assert!(frames.len() >= 25, "the viewer got {} frames in a second", frames.len());
    assert_eq!(server.app.stats().viewers, 1, "no bad offer left a peer behind");
    viewer.close().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_whose_body_stops_coming_is_answered_while_a_viewer_keeps_playing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, _) = server.playing_viewer().await;

    // The headers of an offer and the first byte of its body, then nothing more.
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let headers = format!("POST /offer HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n", server.addr);
    client.write_all(format!("{headers}Content-Length: 100\r\n\r\n{{").as_bytes()).await.unwrap();

    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(frames.len() >= 25, "while a request stalled, the viewer got {} frames in a second", frames.len());

    let mut response = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0; 1024];
        while !String::from_utf8_lossy(&response).contains("not received within") {
            match client.read(&mut chunk).await.unwrap() {
                0 => break,
                read => response.extend_from_slice(&chunk[..read]),
            }
        }
    })
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(answered.is_ok(), "the stalled request was not answered within 30 s");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("data was not received within the designated timeout"), "{response}");
    viewer.close().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_whole_request_are_closed_while_a_viewer_keeps_playing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, _) = server.playing_viewer().await;

    // Half the headers of a request; a connection that sends nothing; and one kept alive
    // after a whole request, then left idle.
    let mut half_headers = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    half_headers.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n", server.addr).as_bytes()).await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut kept_alive = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    kept_alive.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes()).await.unwrap();

    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(frames.len() >= 25, "beside idle connections, the viewer got {} frames in a second", frames.len());

    for (name, connection) in
        [("half the headers", &mut half_headers), ("nothing", &mut silent), ("a whole request", &mut kept_alive)]
    {
        let mut received = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), connection.read_to_end(&mut received)).await;
        assert!(closed.is_ok(), "a connection that sent {name} was still open after 30 s");
        let received = String::from_utf8_lossy(&received);
        if name == "a whole request" {
            assert!(received.starts_with("HTTP/1.1 200"), "the whole request was not answered: {received}");
        } else {
            assert!(received.is_empty(), "a connection that sent {name} was answered: {received}");
        }
    }
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert_increasing(&frames);
    assert!(
        frames.len() >= 25,
        "after the idle connections closed, the viewer got {} frames in a second",
        frames.len()
    );
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    viewer.close().unwrap();
    server.stop().await;
}

/// An offer shaped like Chromium's for a page that only receives: audio and video, every
/// codec it supports, header extensions, RTX.
const CHROME_OFFER: &str = include_str!("fixtures/chrome-offer.sdp");

/// A WHEP client's trickled candidates (RFC 8840): host, TCP and reflexive, then the end.
const TRICKLED_CANDIDATES: &str = "a=ice-ufrag:Zp3q\r\na=ice-pwd:8bcdXa6ceMc5lp0dNnO0jbFv\r\n\
    m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
    a=candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0\r\n\
    a=candidate:2 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active\r\n\
    a=candidate:3 1 udp 1686052607 203.0.113.7 54321 typ srflx raddr 192.168.1.20 rport 54321\r\n\
    a=end-of-candidates\r\n";

/// Values that break parsers: empty, signs, overflows, control characters, a long run.
const ODD_VALUES: [&str; 10] =
    ["", "0", "-1", "65536", "4294967296", "99999999999999999999999", "\u{0}", "\u{ff}\u{fe}", ":", "=="];

/// Lines that are valid SDP keys with missing or odd values.
const ODD_LINES: [&str; 14] = [
    "m=video 0 UDP/TLS/RTP/SAVPF",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "a=rtpmap:96",
    "a=fmtp:96",
    "a=fmtp:97 apt=",
    "a=ssrc-group:FID",
    "a=ssrc:1 cname:",
    "a=extmap:0 x",
    "a=mid:",
    "a=group:BUNDLE",
    "a=fingerprint:sha-256",
    "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "a=simulcast:recv h;l",
    "a=rid:h recv",
];

/// How many panics this test process has seen, anywhere: the server runs in it, so a
/// panic in a request handler or a peer driver is counted even when nothing else shows it
/// (a driver that dies takes only its own peers along).
fn panics_so_far() -> usize {
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    static COUNTING: Once = Once::new();
    COUNTING.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            report(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// A small deterministic generator (xorshift), so a failing case can be found again.
struct Mangler(u64);

impl Mangler {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    /// `sdp` with one to three random changes: a line deleted, doubled, moved, cut short,
    /// replaced by an odd one, or one of its fields replaced by an odd value.
    fn mangle(&mut self, sdp: &str) -> String {
        let mut lines: Vec<String> = sdp.lines().map(str::to_owned).collect();
        for _ in 0..=self.below(3) {
            let at = self.below(lines.len());
            match self.below(6) {
                0 => {
                    lines.remove(at);
                }
                1 => lines.insert(at, lines[at].clone()),
                2 => {
                    let line = lines.remove(at);
                    let to = self.below(lines.len());
                    lines.insert(to, line);
                }
                3 => {
                    let cut = self.below(lines[at].len());
                    lines[at] = lines[at].chars().take(cut).collect();
                }
                4 => lines.insert(at, ODD_LINES[self.below(ODD_LINES.len())].to_owned()),
                _ => {
                    let mut fields: Vec<String> =
                        lines[at].split([' ', ':', '/', '=', ';']).map(str::to_owned).collect();
                    let field = self.below(fields.len());
                    fields[field] = ODD_VALUES[self.below(ODD_VALUES.len())].to_owned();
                    // The separators are lost; what matters is that the line is odd.
                    lines[at] = fields.join(" ");
                }
            }
            if lines.is_empty() {
                break;
            }
        }
        lines.join("\r\n") + "\r\n"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_offers_get_an_answer_or_a_4xx_and_never_disturb_a_viewer() {
    let _lock = exclusive().await;
    let panics = panics_so_far();
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server.url("/offer")).await.unwrap();
    viewer.next_frame(Duration::from_secs(2)).await.expect("the viewer plays");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // Unmangled, the offer is answered on both endpoints.
    let answered = http.post(server.url("/offer")).json(&json!({"sdp": CHROME_OFFER, "type": "offer"}));
    assert_eq!(common::send(answered).await.status(), StatusCode::OK);
    let answered = http.post(server.url("/whep")).header("content-type", "application/sdp").body(CHROME_OFFER);
    let answered = common::send(answered).await;
    assert_eq!(answered.status(), StatusCode::CREATED);
    let mut sessions = vec![server.url(answered.headers()["location"].to_str().unwrap())];
    let trickle = http.patch(&sessions[0]).header("content-type", "application/trickle-ice-sdpfrag");
    assert_eq!(common::send(trickle.body(TRICKLED_CANDIDATES)).await.status(), StatusCode::NO_CONTENT);

    let mut mangler = Mangler(0x5eed_cafe_f00d_d00d);
    let mut outcomes = [0usize; 2];
    for case in 0..400 {
        let sdp = mangler.mangle(CHROME_OFFER);
        let requests = [
            ("/offer", http.post(server.url("/offer")).json(&json!({"sdp": sdp, "type": "offer"}))),
            ("/whep", http.post(server.url("/whep")).header("content-type", "application/sdp").body(sdp.clone())),
        ];
        for (endpoint, request) in requests {
            let response = request
                .send()
                .await
                .unwrap_or_else(|error| panic!("case {case}: {endpoint} gave no answer ({error}) to:\n{sdp}"));
            let status = response.status();
            assert!(
                status.is_success() || status.is_client_error(),
                "case {case}: {endpoint} answered {status} to:\n{sdp}\n{}",
                response.text().await.unwrap_or_default()
            );
            outcomes[usize::from(status.is_success())] += 1;
            if let Some(location) = response.headers().get("location") {
                sessions.push(server.url(location.to_str().unwrap()));
            }
        }
        // Trickled candidates for the newest session, mangled the same way.
        let fragment = mangler.mangle(TRICKLED_CANDIDATES);
        let session = sessions.last().unwrap();
        let trickle =
            http.patch(session).header("content-type", "application/trickle-ice-sdpfrag").body(fragment.clone());
        let response =
            trickle.send().await.unwrap_or_else(|error| panic!("case {case}: no answer ({error}) to:\n{fragment}"));
        let status = response.status();
        assert!(
            status.is_success() || status.is_client_error(),
            "case {case}: PATCH answered {status} to:\n{fragment}"
        );
    }
    eprintln!("mangled offers: {} refused, {} answered", outcomes[0], outcomes[1]);
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "the mangling both broke offers and left some usable");

    for session in sessions {
        let status = common::send(http.delete(&session)).await.status();
        assert_eq!(status, StatusCode::OK, "{session}");
    }
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert_increasing(&frames);
    assert!(frames.len() >= 25, "the viewer got {} frames in a second", frames.len());
    assert_eq!(panics_so_far(), panics, "nothing in the server panicked");
    viewer.close().unwrap();
    server.stop().await;
}

/// Connects a bare WebRTC session to the server from `socket` and drives it as a viewer
/// would until it has sent RTCP (or `limit` passes). Returns the datagrams it sent (STUN
/// checks, the DTLS handshake, SRTCP), to be mangled, and whether it connected.
fn handshake_datagrams(mut rtc: Rtc, socket: &std::net::UdpSocket, limit: Duration) -> (Vec<Vec<u8>>, bool) {
    let local = socket.local_addr().unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let mut sent = Vec::new();
    let mut connected = false;
    let mut buffer = vec![0u8; 2048];
    let until = Instant::now() + limit;
    let sent_rtcp = |sent: &Vec<Vec<u8>>| sent.iter().any(|datagram: &Vec<u8>| (128..192).contains(&datagram[0]));
    while Instant::now() < until && !(connected && sent_rtcp(&sent)) {
        rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
        while let Ok(output) = rtc.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    socket.send_to(&transmit.contents, transmit.destination).unwrap();
                    sent.push(transmit.contents.to_vec());
                }
                Output::Timeout(_) => break,
                Output::Event(event) => connected |= matches!(event, Event::Connected),
            }
        }
        if let Ok((len, source)) = socket.recv_from(&mut buffer)
            && let Ok(contents) = buffer[..len].try_into()
        {
            let receive = Receive { proto: Protocol::Udp, source, destination: local, contents };
            rtc.handle_input(Input::Receive(Instant::now(), receive)).unwrap();
        }
    }
    (sent, connected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_stun_dtls_and_rtp_on_the_media_port_never_disturb_a_viewer() {
    let _lock = exclusive().await;
    let panics = panics_so_far();
    let server = TestServer::start().await;
    let (mut viewer, _) = server.playing_viewer().await;
    let media = server.app.media_addrs()[0];

    // A second session, connected by hand, so that mangled datagrams from its address
    // reach a live peer's DTLS and SRTP, not only the lookup for an owner.
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut rtc = Rtc::builder().clear_codecs().enable_h264(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), Protocol::Udp).unwrap());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let reply = http_offer(&server, &offer.to_sdp_string()).await;
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&reply).unwrap()).unwrap();

    let flood = tokio::task::spawn_blocking(move || {
        let (corpus, connected) = handshake_datagrams(rtc, &socket, Duration::from_secs(10));
        assert!(connected, "the hand-driven session connected");
        let kinds: Vec<u8> = corpus.iter().map(|datagram| datagram[0]).collect();
        assert!(kinds.iter().any(|&first| first < 2), "STUN among {kinds:?}");
        assert!(kinds.iter().any(|&first| (20..64).contains(&first)), "DTLS among {kinds:?}");
        assert!(kinds.iter().any(|&first| (128..192).contains(&first)), "SRTCP among {kinds:?}");
        let stranger = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut mangler = Mangler(0xdead_beef_0bad_f00d);
        for round in 0..20_000 {
            let mut datagram = corpus[mangler.below(corpus.len())].clone();
            match mangler.below(4) {
                0 => {
                    let at = mangler.below(datagram.len());
                    datagram[at] ^= 1 << mangler.below(8);
                }
                1 => datagram.truncate(mangler.below(datagram.len())),
                2 => {
                    // A length field (STUN's, an attribute's, a DTLS record's) made odd.
                    let at = mangler.below(datagram.len().saturating_sub(1));
                    datagram[at] = 0xff;
                    datagram[at + 1] = mangler.below(256) as u8;
                }
                _ => datagram.extend((0..mangler.below(64)).map(|_| mangler.below(256) as u8)),
            }
            // Every other datagram from an address no session knows.
            let from = if round % 2 == 0 { &socket } else { &stranger };
            let _ = from.send_to(&datagram, media);
        }
    });
    let seen = viewer.frames_during(Duration::from_secs(3)).await;
    flood.await.unwrap();
    assert!(seen.len() >= 60, "the viewer got {} frames in 3 s of mangled datagrams", seen.len());
    common::assert_increasing(&seen);
    let later = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(later.len() >= 25, "the viewer got {} frames in the second after", later.len());
    assert_eq!(panics_so_far(), panics, "nothing in the server panicked");
    server.stop().await;
}

/// Posts `sdp` to `/offer` and returns the answer's SDP.
async fn http_offer(server: &TestServer, sdp: &str) -> String {
    let request = reqwest::Client::new().post(server.url("/offer")).json(&json!({"sdp": sdp, "type": "offer"}));
    let reply: serde_json::Value = common::send(request).await.json().await.unwrap();
    reply["sdp"].as_str().unwrap().to_owned()
}
