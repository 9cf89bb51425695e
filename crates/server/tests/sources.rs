//! Files, network streams (HTTP through ffmpeg, RTSP natively) and image sequences, end to
//! end: the test makes its own media from the test pattern (so every picture carries its
//! frame number), streams it through the server, and a decoding viewer checks size, order
//! and the end.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    CAMERA_H264, FRAMES, TestServer, assert_increasing, assert_times_go_forward, clip, exclusive,
    frames_during_together, live_sender, make_frames, make_media, scratch_dir,
};
use webgear_rtc::{Error, Options, SourceSpec, WebGearRtc};
use webgear_testkit::{DecodedFrame, Endpoint, Reaped, Viewer, ffmpegs_reading, free_udp_port};

/// ffmpeg output options for an H.264 clip.
const H264: &[&str] = &["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"];

/// ffmpeg output options for Motion JPEG as RTP carries it (RFC 2435: the standard Huffman
/// tables, 4:2:0).
const MJPEG: &[&str] = &["-c:v", "mjpeg", "-q:v", "3", "-huffman", "default", "-pix_fmt", "yuvj420p"];

/// GStreamer's RTSP server on loopback, serving a clip's H.264 in real time to every
/// client. Stopped when dropped.
struct RtspServer {
    process: Reaped,
    url: String,
}

impl RtspServer {
    /// Serves `clip` on `port` (0: any free port).
    fn start(clip: &Path, port: u16) -> RtspServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rtsp-server.py");
        // Debian's own Python, which has the GStreamer bindings.
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(clip)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with GStreamer's RTSP server bindings is installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the RTSP server printed its port: {line:?}"));
        RtspServer { process: Reaped(child), url: format!("rtsp://127.0.0.1:{port}/stream") }
    }

    /// Freezes the server (`STOP`) or lets it go on (`CONT`), as a camera that hangs.
    fn signal(&self, name: &str) {
        let pid = self.process.0.id().to_string();
        assert!(Command::new("kill").args([&format!("-{name}"), &pid]).status().unwrap().success());
    }

    fn port(&self) -> u16 {
        self.url.split(':').nth(2).and_then(|rest| rest.split('/').next()).unwrap().parse().unwrap()
    }
}

/// Serves `file` over HTTP on loopback; returns its URL and the server task.
async fn serve_over_http(file: &Path) -> (String, tokio::task::JoinHandle<()>) {
    let files = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(file.parent().unwrap()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/{}", listener.local_addr().unwrap(), file.file_name().unwrap().to_str().unwrap());
    (url, tokio::spawn(async move { axum::serve(listener, files).await.unwrap() }))
}

/// Serves `file` on loopback as `name`, answering each request (in lower case) with the
/// bytes `respond` makes of it and the file; returns its URL. The connection is closed
/// after the answer, unless `hang`: then it stays open, sending nothing more.
async fn serve_raw(
    file: &Path,
    name: &str,
    hang: bool,
    respond: impl Fn(&str, &[u8]) -> Vec<u8> + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/{name}", listener.local_addr().unwrap());
    let body: Arc<[u8]> = std::fs::read(file).unwrap().into();
    let respond = Arc::new(respond);
    tokio::spawn(async move {
        loop {
            let (mut connection, _) = listener.accept().await.unwrap();
            let (body, respond) = (body.clone(), respond.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = vec![0u8; 8192];
                let Ok(read) = connection.read(&mut request).await else { return };
                let request = String::from_utf8_lossy(&request[..read]).to_ascii_lowercase();
                let _ = connection.write_all(&respond(&request, &body)).await;
                if hang {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    url
}

/// Serves `file` over HTTP on loopback to every request, then keeps each connection open
/// sending nothing more, as a web server or camera that hangs; returns its URL.
async fn serve_then_hang(file: &Path) -> String {
    serve_raw(file, "stream.ts", true, |_, body| {
        [b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n".as_slice(), body].concat()
    })
    .await
}

/// Serves `file` over HTTP on loopback, with byte ranges, but cuts every response short
/// after `cut` bytes, as a web server does to a connection it finds idle too long (one a
/// paused file's ffmpeg stopped reading); returns its URL.
async fn serve_cutting_responses(file: &Path, cut: usize) -> String {
    serve_raw(file, "clip.mp4", false, move |request, body| {
        let start: usize = request
            .lines()
            .find_map(|line| line.strip_prefix("range: bytes="))
            .and_then(|range| range.split('-').next()?.trim().parse().ok())
            .unwrap_or(0)
            .min(body.len());
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Type: video/mp4\r\nAccept-Ranges: bytes\r\n\
             Content-Range: bytes {start}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len().saturating_sub(1),
            body.len(),
            body.len() - start,
        );
        [head.as_bytes(), &body[start..body.len().min(start + cut)]].concat()
    })
    .await
}

/// An MJPEG camera on loopback, as IP cameras and phone camera apps serve one over HTTP:
/// every request gets an endless `multipart/x-mixed-replace` response, one JPEG a frame at
/// 30 fps, the frame of the moment (looping over `frames`), whoever asks and whenever.
struct MjpegCamera {
    url: String,
    started: Instant,
    frames: u64,
    /// Requests answered so far.
    requests: Arc<AtomicUsize>,
}

impl MjpegCamera {
    async fn serve(frames: Vec<Vec<u8>>) -> MjpegCamera {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let camera = MjpegCamera {
            url: format!("http://{}/video.mjpg", listener.local_addr().unwrap()),
            started: Instant::now(),
            frames: frames.len() as u64,
            requests: Arc::default(),
        };
        let (started, frames, requests) = (camera.started, Arc::new(frames), camera.requests.clone());
        tokio::spawn(async move {
            loop {
                let (mut connection, _) = listener.accept().await.unwrap();
                requests.fetch_add(1, Ordering::Relaxed);
                let frames = frames.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut request = vec![0u8; 8192];
                    let _ = connection.read(&mut request).await;
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";
                    if connection.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Each frame once, in order, at the camera's frame times: a frame picked
                    // by the clock at each tick was now and then sent twice and its
                    // neighbour never, when ticks fell near the frames' boundaries.
                    let first = MjpegCamera::frame_at(started, Instant::now()) + 1;
                    let first_at = started + Duration::from_secs(1).mul_f64(first as f64 / 30.0);
                    let mut ticks = tokio::time::interval_at(first_at.into(), Duration::from_secs(1) / 30);
                    for number in first.. {
                        ticks.tick().await;
                        let jpeg = &frames[(number % frames.len() as u64) as usize];
                        let part =
                            format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                        let sent = [part.as_bytes(), jpeg, b"\r\n"].concat();
                        if connection.write_all(&sent).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        camera
    }

    /// The frame count at `at` since the camera started (not wrapped).
    fn frame_at(started: Instant, at: Instant) -> u64 {
        (at.duration_since(started).as_secs_f64() * 30.0) as u64
    }

    /// How many frames `number` is behind the frame the camera sends now.
    fn frames_behind(&self, number: u16) -> u64 {
        let now = MjpegCamera::frame_at(self.started, Instant::now()) % self.frames;
        (now + self.frames - u64::from(number)) % self.frames
    }
}

async fn server_for(source: SourceSpec) -> TestServer {
    server_with(source, |options| options.set("frame_size_reduction", &serde_json::json!(50)).unwrap()).await
}

/// A server for `source` with the default options, changed by `change`, its data files in
/// a fresh folder.
async fn server_with(source: SourceSpec, change: impl FnOnce(&mut Options)) -> TestServer {
    let mut options = Options::default();
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    change(&mut options);
    TestServer::start_with(WebGearRtc::builder().source(source).options(options)).await
}

/// Plays the stream to its end and checks what the viewer saw: 320x180 pictures (640x360
/// reduced by half), frame numbers in order up to the source's last, then "The End".
/// Returns the first number seen.
async fn assert_plays_to_the_end(server: &TestServer) -> u16 {
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (320, 180));
    let mut frames: Vec<DecodedFrame> = vec![first];
    frames.extend(viewer.frames_during(Duration::from_secs(4)).await);
    let first = assert_numbered_to_the_end(&frames, FRAMES);
    assert_eq!(frames.last().unwrap().number, None, "then \"The End\"");
    viewer.close().unwrap();
    first
}

/// Checks that `frames` carry the numbers of a source of `source_frames` frames in order
/// up to its last; returns the first.
fn assert_numbered_to_the_end(frames: &[DecodedFrame], source_frames: u64) -> u16 {
    let numbers: Vec<u16> = frames.iter().filter_map(|f| f.number).collect();
    assert!(numbers.len() >= 40, "only {} numbered frames: {numbers:?}", numbers.len());
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {numbers:?}");
    assert_eq!(numbers.last(), Some(&(source_frames as u16 - 1)), "the stream reached the source's last frame");
    numbers[0]
}

/// How long the clips play: the first viewer of a file that played from the server's start
/// would come after its end.
const CLIP_LENGTH: Duration = Duration::from_millis(FRAMES * 1000 / 30);

/// A file is first read when its first viewer comes, decoded or passed through: nothing
/// plays for nobody (no frame is read; its one ffmpeg, started with the server so that the
/// first viewer does not wait for it, decodes no further than its pipe holds, and waits),
/// and a viewer who comes after the clip's length still sees it all, from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_waits_for_its_first_viewer() {
    let _lock = exclusive().await;
    let path = clip("clip.mp4", H264);
    let input = path.display().to_string();
    for passed_through in [false, true] {
        let server = file_server(&path, passed_through).await;
        tokio::time::sleep(CLIP_LENGTH + Duration::from_secs(1)).await;
        let stats = server.app.stats();
        assert_eq!((stats.frames_unwatched, stats.frames_passed_through), (0, 0), "read for nobody: {stats:?}");
        let ready = ffmpegs_reading(&input);
        assert_eq!(ready.len(), 1, "ffmpegs ready to read the file (passed through: {passed_through}): {ready:?}");
        let first = if passed_through {
            assert_passes_through_to_the_end(&server).await
        } else {
            assert_plays_to_the_end(&server).await
        };
        assert!(first < FRAMES as u16 / 2, "the viewer saw the clip from frame {first}, not from its start");
        server.stop().await;
    }
}

/// A file pauses while nobody watches, decoded or passed through, as in WebGear_RTC: once
/// its only viewer has left, nothing of it is read, and the next viewer, coming after the
/// rest of the clip would have played, sees it go on from where the first left it, to its
/// end. Whether the viewer leaves alone (WHEP's `DELETE`) or is closed with everyone by
/// WebGear_RTC's reset (`/close_connection`), the frames kept for joiners stay, and the
/// next viewer of a file passed through starts from them rather than from the file's next
/// keyframe. The reset restarts the stream clock too; the next viewer's RTP times still
/// only go forward, from the kept frames to the ones read after the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_pauses_while_nobody_watches() {
    let _lock = exclusive().await;
    // Five seconds, a keyframe every 2 s (as rare as a file passed through may have them):
    // a viewer leaving after a second leaves the file far from its next keyframe.
    const CLIP_FRAMES: u64 = 150;
    const KEYFRAME_INTERVAL: u64 = 60;
    const KEYFRAME_EVERY_2_S: &[&str] =
        &["-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", "60", "-pix_fmt", "yuv420p"];
    let path = scratch_dir().join("long.mp4");
    make_frames(&path, CLIP_FRAMES, KEYFRAME_EVERY_2_S);
    for (passed_through, reset) in [(false, true), (true, false), (true, true)] {
        let server = file_server(&path, passed_through).await;
        let mut viewer = Viewer::connect_to(&Endpoint::Whep { url: server.url("/whep"), token: None }).await.unwrap();
        let watched = viewer.frames_during(Duration::from_secs(1)).await;
        let left_at = watched.iter().filter_map(|f| f.number).max().expect("numbered frames");
        if reset {
            server.close_all_connections().await;
        } else {
            let left = viewer.session().unwrap().end().await.unwrap();
            assert!(left.is_success(), "DELETE answered {left}");
        }
        server.until_no_viewers(Duration::from_secs(5), "the viewer was never removed").await;
        // A frame being read as the viewer left may still be counted.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = server.app.stats();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let paused = server.app.stats();
        let read =
            |stats: &webgear_rtc::Stats| (stats.frames_unwatched, stats.frames_encoded, stats.frames_passed_through);
        assert_eq!(read(&paused), read(&left), "read while nobody watched: {left:?} then {paused:?}");

        let (mut back, resumed) = server.playing_viewer().await;
        let mut frames = vec![resumed];
        frames.extend(back.frames_during(Duration::from_secs(5)).await);
        let resumed_at = u64::from(assert_numbered_to_the_end(&frames, CLIP_FRAMES));
        assert_times_go_forward(&frames);
        if passed_through {
            // From the last keyframe before the last frame sent, or from the next frame
            // when it is a keyframe: the file goes on as soon as the viewer is admitted,
            // and may reach it during the viewer's handshake.
            let paused_at = left.frames_passed_through - 1;
            let first = frames.iter().find(|frame| frame.number.map(u64::from) == Some(resumed_at));
            let next_is_keyframe = resumed_at == paused_at + 1 && first.is_some_and(|frame| frame.keyframe);
            assert!(
                (resumed_at <= paused_at && resumed_at + KEYFRAME_INTERVAL >= paused_at) || next_is_keyframe,
                "frame {resumed_at} after the file paused at {paused_at}"
            );
        } else {
            // From the frames kept (a keyframe and up to 30 since) or from a keyframe made
            // for the viewer as the file goes on.
            let left_at = u64::from(left_at);
            assert!(
                resumed_at + 30 >= left_at && resumed_at <= left_at + 20,
                "frame {resumed_at} after the first viewer left at {left_at}"
            );
        }
        assert_eq!(frames.last().unwrap().number, None, "then \"The End\"");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_mp4_file_plays_in_order_to_the_end() {
    let _lock = exclusive().await;
    let path = clip("clip.mp4", H264);
    let server = server_for(SourceSpec::File(path)).await;
    assert_plays_to_the_end(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_scaled_to_the_resolution_option() {
    let _lock = exclusive().await;
    let path = clip("clip.mkv", &["-c:v", "ffv1"]);
    let server = server_with(SourceSpec::File(path), |options| {
        options.set("frame_size_reduction", &serde_json::json!(0)).unwrap();
        options.set("resolution", &serde_json::json!([480, 270])).unwrap();
    })
    .await;
    let (_viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (480, 270));
    assert!(first.number.is_some(), "the scaled picture keeps its frame code");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossless_mkv_file_plays_in_order_to_the_end() {
    let _lock = exclusive().await;
    let path = clip("clip.mkv", &["-c:v", "ffv1"]);
    let server = server_for(SourceSpec::File(path)).await;
    assert_plays_to_the_end(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_stream_plays_in_order_to_the_end() {
    let _lock = exclusive().await;
    let (url, http) = serve_over_http(&clip("clip.mp4", H264)).await;

    let server = server_for(url.parse().unwrap()).await;
    assert_plays_to_the_end(&server).await;
    server.stop().await;
    http.abort();
}

/// A file over HTTP with no duration in it, as a WebM a browser recorded (MediaRecorder
/// writes none; ffmpeg's `-live 1` neither) or an MPEG-TS recording from a web server
/// without byte ranges (through which ffprobe cannot find the last timestamp), is a file
/// all the same, for the web server sends its length: it waits for its first viewer, and
/// plays at its own pace. Taken for a live stream, it was read for nobody from the start,
/// as fast as it decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_http_without_a_duration_waits_for_its_viewer_and_plays_at_its_pace() {
    let _lock = exclusive().await;
    // As a browser's MediaRecorder writes it: VP8 without a duration.
    const RECORDED_WEBM: &[&str] = &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "2M", "-live", "1"];
    for (name, options) in [("recording.ts", H264), ("recording.webm", RECORDED_WEBM)] {
        let url = serve_raw(&clip(name, options), name, false, |_, body| {
            [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes(), body]
                .concat()
        })
        .await;
        let server = server_for(url.parse().unwrap()).await;
        tokio::time::sleep(CLIP_LENGTH + Duration::from_secs(1)).await;
        let stats = server.app.stats();
        assert_eq!(stats.frames_unwatched, 0, "{name} read for nobody: {stats:?}");
        assert!(ffmpegs_reading(&url).is_empty(), "an ffmpeg reads {name} for nobody");

        let (mut viewer, first) = server.playing_viewer().await;
        let mut frames = vec![first];
        frames.extend(viewer.frames_during(Duration::from_secs(4)).await);
        let first_number = assert_numbered_to_the_end(&frames, FRAMES);
        assert!(first_number < FRAMES as u16 / 2, "{name} seen from frame {first_number}, not from its start");
        let numbered: Vec<&DecodedFrame> = frames.iter().filter(|frame| frame.number.is_some()).collect();
        let (start, end) = (numbered[0], numbered[numbered.len() - 1]);
        let played_for = end.arrived_at - start.arrived_at;
        let clip_span = Duration::from_millis(u64::from(end.number.unwrap() - start.number.unwrap()) * 1000 / 30);
        assert!(played_for >= clip_span * 3 / 4, "{name}: {clip_span:?} of it played in {played_for:?}");
        server.stop().await;
    }
}

/// An MJPEG camera over HTTP is live (ffprobe finds neither a duration nor a length, as a
/// file has): it is read all along, whether watched or not, and a viewer who comes after a
/// pause sees what the camera sends now. Taken for a file, it paused with its viewers and
/// went on from the frames its connection had buffered, behind for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mjpeg_camera_over_http_is_read_all_along_and_a_returning_viewer_sees_it_live() {
    let _lock = exclusive().await;
    // Eight seconds of frames, which the camera loops.
    const CAMERA_FRAMES: u64 = 240;
    let dir = scratch_dir();
    make_frames(&dir.join("%03d.jpg"), CAMERA_FRAMES, MJPEG);
    let frames = (1..=CAMERA_FRAMES).map(|n| std::fs::read(dir.join(format!("{n:03}.jpg"))).unwrap()).collect();
    let camera = MjpegCamera::serve(frames).await;
    // Unreduced, as a source that could pass through: it is not H.264, so it is decoded.
    let server = unreduced_server_for(camera.url.parse().unwrap()).await;

    let (mut viewer, _) = server.playing_viewer().await;
    // Probed, then read by one ffmpeg: not checked for H.264 it does not carry (which
    // took 10 s of it before it played).
    assert_eq!(camera.requests.load(Ordering::Relaxed), 2, "requests to the camera");
    let watched = viewer.frames_during(Duration::from_secs(2)).await;
    let numbers: Vec<u16> = watched.iter().filter_map(|frame| frame.number).collect();
    assert!(numbers.len() >= 50, "{} frames in 2 s", numbers.len());
    let in_order = |pair: &[u16]| pair[1] > pair[0] || pair[1] < 10;
    assert!(numbers.windows(2).all(in_order), "frames out of order: {numbers:?}");
    server.close_all_connections().await;
    server.until_no_viewers(Duration::from_secs(5), "the viewer was never removed").await;

    let left = server.app.stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = server.app.stats();
    let read_meanwhile = later.frames_unwatched - left.frames_unwatched;
    assert!(read_meanwhile >= 60, "{read_meanwhile} frames read in the 3 s nobody watched: {left:?} then {later:?}");

    let (mut back, _) = server.playing_viewer().await;
    // Past the frames sent at once to start the joiner (the last keyframe and those since).
    let frames = back.frames_during(Duration::from_secs(1)).await;
    let last = frames.iter().rev().find_map(|frame| frame.number).expect("numbered frames");
    let behind = camera.frames_behind(last);
    assert!(behind <= 15, "frame {last} shown {behind} frames behind the camera");
    server.stop().await;
}

/// A live HLS playlist (one with no end, so no duration) is live too: received once, it
/// plays decoded at once while its H.264 is checked, then passes through from a keyframe
/// without a jump, read all along. As HLS brings the video a segment at a time, seconds
/// of it at once, its frames are handed out at their pace rather than in a burst a
/// segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_hls_stream_plays_at_once_at_its_pace_then_passes_through_once_checked() {
    let _lock = exclusive().await;
    let camera = clip("camera.mp4", CAMERA_H264);
    let playlist = scratch_dir().join("live.m3u8");
    let segments = ["-hls_time", "1", "-hls_list_size", "5", "-hls_flags", "delete_segments"];
    let _sender = live_sender(&camera, "hls", &segments, playlist.to_str().unwrap());
    let ready_by = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&playlist).map_or(0, |text| text.matches(".ts").count()) < 3 {
        assert!(Instant::now() < ready_by, "the HLS sender wrote no playlist of 3 segments");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (url, http) = serve_over_http(&playlist).await;
    let server = unreduced_server_for(url.parse().unwrap()).await;
    let frames = assert_decoded_then_passed_through(&server).await;
    let longest_gap = frames.windows(2).map(|pair| pair[1].arrived_at - pair[0].arrived_at).max().unwrap();
    assert!(longest_gap < Duration::from_millis(500), "frames came in bursts, {longest_gap:?} apart");

    server.close_all_connections().await;
    server.until_no_viewers(Duration::from_secs(5), "the viewer was never removed").await;
    let left = server.app.stats().frames_passed_through;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read = server.app.stats().frames_passed_through - left;
    assert!(read >= 15, "{read} frames read in the second nobody watched");
    server.stop().await;
    http.abort();
}

/// A file over HTTP whose connection is cut (as a web server cuts one left idle while the
/// file paused) goes on from where it was cut, over a new connection asking for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_file_whose_connection_is_cut_goes_on_where_it_stopped() {
    let _lock = exclusive().await;
    let path = clip("clip.mp4", H264);
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    // Three cuts or more.
    let url = serve_cutting_responses(&path, size / 4).await;
    let server = server_for(url.parse().unwrap()).await;
    assert_plays_to_the_end(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_and_globbed_image_sequences_play_to_the_end() {
    let _lock = exclusive().await;
    let folder = scratch_dir();
    make_media(&folder.join("%04d.png"), &["-start_number", "0"]);
    for pattern in ["%04d.png", "*.png"] {
        let source = format!("{}/{pattern}", folder.display()).parse::<SourceSpec>().unwrap();
        assert!(matches!(source, SourceSpec::ImageSequence(_)), "{source:?}");
        let server = server_for(source).await;
        assert_plays_to_the_end(&server).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_infinite_mode_a_network_stream_that_drops_shows_no_input_then_resumes() {
    let _lock = exclusive().await;
    let (url, http) = serve_over_http(&clip("clip.mp4", H264)).await;

    let server = server_with(url.parse().unwrap(), |options| {
        options.set("enable_infinite_frames", &serde_json::json!(true)).unwrap()
    })
    .await;
    let (mut viewer, _) = server.playing_viewer().await;

    // The 2 s stream ends; "No Input" fills in until the reconnect (after a second) plays
    // the stream again from its start, for the same viewer.
    let frames = viewer.frames_during(Duration::from_secs(6)).await;
    let phases: Vec<bool> = frames.iter().map(|f| f.number.is_some()).collect();
    let gap = phases.iter().position(|&numbered| !numbered).expect("\"No Input\" frames after the end");
    let resumed = gap + phases[gap..].iter().position(|&numbered| numbered).expect("the stream came back");
    assert!(resumed - gap >= 20, "about a second of \"No Input\" before the retry, got {} frames", resumed - gap);
    let after: Vec<u16> = frames[resumed..].iter().map_while(|f| f.number).collect();
    assert!(after.len() >= 20 && after[0] < 10, "the stream restarted from its beginning: {after:?}");
    assert!(after.windows(2).all(|pair| pair[0] < pair[1]), "{after:?}");
    assert_eq!(server.app.stats().viewers, 1, "the viewer never had to reconnect");
    server.stop().await;
    http.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_of_an_x_display_streams() {
    let _lock = exclusive().await;
    let display = format!(":{}", 50 + std::process::id() % 200);
    let _xvfb = Reaped(
        Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", "640x360x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is installed"),
    );
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{}", &display[1..]));
    let ready_by = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < ready_by, "Xvfb did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let source: SourceSpec = format!("screen:{display}").parse().unwrap();
    let server = server_for(source).await;
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (320, 180), "the 640x360 screen, halved");
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(frames.len() >= 20, "only {} frames of the screen in a second", frames.len());
    server.stop().await;
}

#[tokio::test]
async fn a_source_that_cannot_be_opened_fails_at_start_naming_it_and_why() {
    let broken = scratch_dir().join("broken.mp4");
    std::fs::write(&broken, b"this is not a video").unwrap();
    let mut options = Options::default();
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    for (source, says) in [
        (SourceSpec::File(broken.clone()), "Invalid data"),
        (SourceSpec::File(scratch_dir().join("missing.mp4")), "no such file"),
        ("http://127.0.0.1:9/nothing.mp4".parse().unwrap(), "Connection refused"),
        // Received through a relay: its failure, not the reader's complaint of no input.
        ("rtmp://127.0.0.1:9/live".parse().unwrap(), "Connection refused"),
    ] {
        let name = source.to_string();
        let error = WebGearRtc::builder().source(source).options(options.clone()).build().await.unwrap_err();
        assert!(matches!(error, Error::Source(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&name) && message.contains(says), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ffmpeg_child_is_reaped_when_the_server_stops_mid_stream() {
    let _lock = exclusive().await;
    let path = clip("long.mkv", &["-c:v", "ffv1"]);
    let server = server_for(SourceSpec::File(path.clone())).await;
    let (_viewer, _) = server.playing_viewer().await;
    let running = || {
        let out = Command::new("pgrep").args(["-f", &path.display().to_string()]).output().unwrap();
        !out.stdout.is_empty()
    };
    assert!(running(), "ffmpeg is reading the clip");
    server.stop().await;
    assert!(!running(), "ffmpeg outlived the server");
}

/// A server for `source` with frames left at their size: H.264 may pass through.
async fn unreduced_server_for(source: SourceSpec) -> TestServer {
    server_with(source, |options| options.set("frame_size_reduction", &serde_json::json!(0)).unwrap()).await
}

/// A server for the H.264 file at `path`, which passes through unreduced when
/// `passed_through`, and is decoded and reduced by half otherwise.
async fn file_server(path: &Path, passed_through: bool) -> TestServer {
    let source = SourceSpec::File(path.to_owned());
    if passed_through { unreduced_server_for(source).await } else { server_for(source).await }
}

/// Plays a stream whose H.264 passes through to its end and checks that no encoder ran
/// while the source played, and that the viewer saw the source's own 640x360 pictures in
/// order up to its last, then "The End" drawn at that size. Returns the first number seen.
async fn assert_passes_through_to_the_end(server: &TestServer) -> u16 {
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360), "the source's own pictures");
    let mut frames = vec![first];
    frames.extend(viewer.frames_during(Duration::from_secs(1)).await);
    let stats = server.app.stats();
    assert_eq!(stats.encoders_running, 0, "no encoder while the source plays: {stats:?}");
    assert_eq!(stats.frames_encoded, 0, "{stats:?}");
    assert!(stats.frames_passed_through >= 30, "{stats:?}");

    frames.extend(viewer.frames_during(Duration::from_millis(2500)).await);
    let first = assert_numbered_to_the_end(&frames, FRAMES);
    let last = frames.last().unwrap();
    assert_eq!((last.number, last.width), (None, 640), "then \"The End\", drawn at the source's size");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_h264_stream_passes_through_to_viewers_with_no_encoder() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("camera.mp4", CAMERA_H264), 0);
    let server = unreduced_server_for(camera.url.parse().unwrap()).await;
    assert_passes_through_to_the_end(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_file_with_frequent_keyframes_passes_through_to_viewers_with_no_encoder() {
    let _lock = exclusive().await;
    // High profile (CABAC, 8x8 transforms) as most files are, without B-frames: the test
    // viewer decodes it with OpenH264, the decoder Firefox uses for WebRTC's H.264.
    let high = &["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "0", "-g", "15"];
    let server = unreduced_server_for(SourceSpec::File(clip("high-profile.mp4", high))).await;
    assert_passes_through_to_the_end(&server).await;
    server.stop().await;
}

/// ffmpeg output options for H.264 that passes through, with keyframes at frames 0 and
/// 45 (1.5 s apart).
const KEYFRAME_EVERY_45: &[&str] =
    &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "45", "-pix_fmt", "yuv420p"];

/// Plays `viewer` up to frame 20: well past the keyframe at 0, further than the few frames
/// kept for joiners when an encoder could make them a keyframe instead.
async fn play_past_frame_20(viewer: &mut Viewer) -> u16 {
    let mut latest = 0;
    while latest < 20 {
        latest = viewer.next_frame(Duration::from_secs(2)).await.and_then(|frame| frame.number).unwrap();
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_a_passed_through_file_between_keyframes_starts_from_the_last_one() {
    let _lock = exclusive().await;
    let server = unreduced_server_for(SourceSpec::File(clip("keyframe-every-45.mp4", KEYFRAME_EVERY_45))).await;
    let (mut watching, _) = server.playing_viewer().await;
    play_past_frame_20(&mut watching).await;

    let (joiner, first) = server.playing_viewer().await;
    assert_eq!(first.number, Some(0), "the joiner started from the last keyframe, not the next (frame 45)");
    // It went through the frames since at once and now sees what the other viewer sees.
    let together = frames_during_together(vec![watching, joiner], Duration::from_millis(300)).await;
    let last_numbers: Vec<Option<u16>> =
        together.iter().map(|(_, frames)| frames.iter().rev().find_map(|frame| frame.number)).collect();
    let (a, b) = (last_numbers[0].unwrap(), last_numbers[1].unwrap());
    assert!(a.abs_diff(b) <= 1, "the viewers show frames {a} and {b}");
    assert_eq!(server.app.stats().encoders_running, 0);
    server.stop().await;
}

/// A live stream passed through goes on being sent whether anyone watches or not, so the
/// frames kept for joiners stay current once everyone has left (here all at once, by
/// WebGear_RTC's reset, as when the default page is reloaded): the next viewer starts from
/// the last keyframe rather than waiting for the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_coming_after_everyone_left_a_live_stream_passed_through_starts_from_the_last_keyframe() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("keyframe-every-45.mp4", KEYFRAME_EVERY_45), 0);
    let server = unreduced_server_for(camera.url.parse().unwrap()).await;
    let (mut watching, _) = server.playing_viewer().await;
    play_past_frame_20(&mut watching).await;
    server.close_all_connections().await;
    server.until_no_viewers(Duration::from_secs(2), "the reset left a viewer").await;
    let reached = server.app.stats().frames_passed_through;

    // The clip's keyframes are frames 0 and 45: the viewer starts from the one before the
    // frame the stream had reached, and would otherwise have waited for the next one, or
    // past frame 45, for "The End".
    let (mut back, first) = server.playing_viewer().await;
    let started_at = first.number.map(u64::from);
    assert!(
        first.keyframe && started_at.is_some_and(|number| number < reached),
        "the viewer started from frame {started_at:?}, not from the last keyframe before frame {reached}"
    );
    let mut frames = vec![first];
    frames.extend(back.frames_during(Duration::from_millis(500)).await);
    // The two-second clip may end meanwhile, with "The End", which bears no number.
    assert_times_go_forward(&frames);
    frames.retain(|frame| frame.number.is_some());
    assert_increasing(&frames);
    assert_eq!(server.app.stats().encoders_running, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_of_a_passed_through_file_that_lost_data_starts_again_from_the_last_keyframe() {
    let _lock = exclusive().await;
    let server = unreduced_server_for(SourceSpec::File(clip("keyframe-every-45.mp4", KEYFRAME_EVERY_45))).await;
    let (mut viewer, _) = server.playing_viewer().await;
    let latest = play_past_frame_20(&mut viewer).await;

    // As a decoder that lost data beyond retransmission does; the file cannot be asked for
    // a keyframe, and the next is frame 45.
    viewer.request_keyframe();
    let mut numbers = Vec::new();
    while let Some(frame) = viewer.next_frame(Duration::from_millis(500)).await {
        numbers.extend(frame.number);
        if numbers.len() >= 30 {
            break;
        }
    }
    let restart = numbers.iter().position(|&number| number == 0);
    let restart = restart.unwrap_or_else(|| panic!("no frame 0 after the request, after {latest}: {numbers:?}"));
    let again = &numbers[restart..];
    assert!(again.windows(2).all(|pair| pair[0] < pair[1]), "from the keyframe on in order: {numbers:?}");
    assert!(again.last() > Some(&latest), "and on to the live frames: {numbers:?}");
    assert_eq!(server.app.stats().encoders_running, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_file_over_http_passes_through_too() {
    let _lock = exclusive().await;
    let (url, http) = serve_over_http(&clip("camera.mp4", CAMERA_H264)).await;
    let server = unreduced_server_for(url.parse().unwrap()).await;
    assert_passes_through_to_the_end(&server).await;
    server.stop().await;
    http.abort();
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something listens on TCP `port` (read from the kernel's table: connecting
/// to look would use up a sender that takes one caller).
fn wait_for_tcp_listener(port: u16) {
    let listening = format!(":{port:04X} 00000000:0000 0A");
    let ready_by = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/net/tcp").unwrap().contains(&listening) {
        assert!(Instant::now() < ready_by, "nothing listens on TCP port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the server passes the source's frames on, then checks that a viewer gets
/// the stream's own 640x360 pictures, 2 s of them in order (the looped clip restarts its
/// numbers every 2 s), with no encoder running.
async fn assert_live_stream_passes_through(server: &TestServer) {
    // It plays decoded while 5 s of it are checked, then passes through from a keyframe.
    let flowing_by = Instant::now() + Duration::from_secs(20);
    while server.app.stats().frames_passed_through == 0 {
        assert!(Instant::now() < flowing_by, "the stream never flowed: {:?}", server.app.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360), "the stream's own pictures");
    assert_live_frames_in_order(&mut viewer).await;
    let stats = server.app.stats();
    assert_eq!(stats.encoders_running, 0, "no encoder while the stream plays: {stats:?}");
    assert_eq!(stats.frames_encoded, 0, "{stats:?}");
}

/// Two seconds of a looped live clip: 50 frames or more, in order.
async fn assert_live_frames_in_order(viewer: &mut Viewer) {
    assert_looped_clip_in_order(&two_seconds_of_frames(viewer).await);
}

/// The viewer's next two seconds of a live stream, checked to hold 50 frames or more.
async fn two_seconds_of_frames(viewer: &mut Viewer) -> Vec<DecodedFrame> {
    let frames = viewer.frames_during(Duration::from_secs(2)).await;
    assert!(frames.len() >= 50, "{} frames in 2 s", frames.len());
    frames
}

/// Frames of a looped live clip of `FRAMES` frames: their numbers increase but where the
/// loop starts again (from the clip's last frames to its first).
fn assert_looped_clip_in_order(frames: &[DecodedFrame]) {
    let numbers: Vec<u16> = frames.iter().filter_map(|f| f.number).collect();
    let last = FRAMES as u16 - 1;
    let in_order = |pair: &[u16]| pair[1] > pair[0] || (pair[0] + 5 >= last && pair[1] <= 5);
    assert!(numbers.windows(2).all(in_order), "frames out of order: {numbers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_h264_stream_over_udp_plays_at_once_then_passes_through_once_checked() {
    let _lock = exclusive().await;
    let camera = clip("udp-camera.mp4", CAMERA_H264);
    let port = free_udp_port();
    // MPEG-TS over UDP, as hardware encoders and OBS send it.
    let _sender = live_sender(&camera, "mpegts", &[], &format!("udp://127.0.0.1:{port}?pkt_size=1316"));
    let server = unreduced_server_for(format!("udp://127.0.0.1:{port}").parse().unwrap()).await;
    assert_decoded_then_passed_through(&server).await;
    server.stop().await;
}

/// A live stream's first viewer, come at once: checking that the stream's H.264 can go to
/// viewers as it is takes seconds of it, and it plays decoded and encoded meanwhile; then,
/// from one of its keyframes on, as it is, to the same viewer, without a break. Checks
/// the stream's own 640x360 pictures in order over 10 s, and returns them.
async fn assert_decoded_then_passed_through(server: &TestServer) -> Vec<DecodedFrame> {
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360), "the stream's own pictures");
    let stats = server.app.stats();
    assert_eq!((stats.encoders_running, stats.frames_passed_through), (1, 0), "decoded while checked: {stats:?}");

    let frames = viewer.frames_during(Duration::from_secs(10)).await;
    let stats = server.app.stats();
    assert!(stats.frames_passed_through > 0, "never passed through: {stats:?}");
    assert_eq!(stats.encoders_running, 0, "no encoder once passed through: {stats:?}");
    assert!(frames.len() >= 270, "{} frames in 10 s", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)));
    // The last picture decoded may come again as the first passed through; none older.
    let mut shown = frames.clone();
    shown.dedup_by_key(|frame| frame.number);
    assert_looped_clip_in_order(&shown);
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_joined_seconds_before_its_next_keyframe_plays_once_one_comes() {
    let _lock = exclusive().await;
    // A keyframe every 4 s, and only keyframes carry the picture size in MPEG-TS.
    let path = scratch_dir().join("udp-rare-keyframes.mp4");
    let rare_keyframes = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "120", "-sc_threshold", "0"];
    make_frames(&path, 120, &rare_keyframes);
    let port = free_udp_port();
    let _sender = live_sender(&path, "mpegts", &[], &format!("udp://127.0.0.1:{port}?pkt_size=1316"));
    // Joined a second after a keyframe: the receiving ffmpeg's first study of the stream
    // (a second) finds no picture size, and it gave up, failing the start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = unreduced_server_for(format!("udp://127.0.0.1:{port}").parse().unwrap()).await;
    // Its decoding may also start between keyframes, and wait for the next.
    let mut viewer = Viewer::connect(&server.url("/offer")).await.unwrap();
    let first = viewer.next_frame(Duration::from_secs(10)).await.expect("a picture once a keyframe came");
    assert_eq!((first.width, first.height), (640, 360), "the stream's own pictures");
    two_seconds_of_frames(&mut viewer).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_udp_stream_whose_sender_goes_silent_ends_and_frees_its_ffmpeg() {
    let _lock = exclusive().await;
    let camera = clip("udp-camera.mp4", CAMERA_H264);
    let port = free_udp_port();
    let url = format!("udp://127.0.0.1:{port}");
    let sender = live_sender(&camera, "mpegts", &[], &format!("{url}?pkt_size=1316"));
    let server = unreduced_server_for(url.parse().unwrap()).await;
    let (mut viewer, _) = server.playing_viewer().await;
    next_frame_numbered(&mut viewer, true).await;
    assert!(!ffmpegs_reading(&url).is_empty(), "an ffmpeg receives the stream");

    // UDP has no goodbye: the sender just stops. The stream fails as stalled and ends
    // with "The End", and the ffmpeg receiving it is stopped.
    drop(sender);
    next_frame_numbered(&mut viewer, false).await;
    assert!(ffmpegs_reading(&url).is_empty(), "the ffmpeg receiving the silent stream still runs");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_delayed_by_time_delay_starts_live() {
    let _lock = exclusive().await;
    // 20 s of numbered pictures, looped: long enough to tell seconds behind from live.
    const CLIP_FRAMES: u16 = 600;
    let path = scratch_dir().join("udp-delayed.mp4");
    make_frames(&path, CLIP_FRAMES.into(), CAMERA_H264);
    let port = free_udp_port();
    let _sender = live_sender(&path, "mpegts", &[], &format!("udp://127.0.0.1:{port}?pkt_size=1316"));
    // vidgear's `time_delay`, longer than a live stream may stay silent, and than the check
    // of its H.264 before it passes through: left unread, the stream's 12 s would queue up
    // and be raced through after the delay.
    let delay = Duration::from_secs(12);
    let url = format!("udp://127.0.0.1:{port}");
    let started = Instant::now();
    let server = server_with(url.parse().unwrap(), |options| {
        options.set("frame_size_reduction", &serde_json::json!(0)).unwrap();
        options.set("time_delay", &serde_json::json!(delay.as_secs_f64())).unwrap();
    })
    .await;
    let mut viewer = Viewer::connect(&server.url("/offer")).await.unwrap();
    viewer.next_frame(Duration::from_secs(20)).await.expect("the stream plays after the delay");
    assert!(started.elapsed() >= delay, "nothing is streamed before the delay, decoded or passed through");
    let frames = two_seconds_of_frames(&mut viewer).await;
    assert!(frames.iter().all(|frame| frame.number.is_some()), "the stream's own pictures go on, not \"The End\"");
    // Live, the pictures advance as the clock does: 60 in 2 s (up to a second more for a
    // busy machine catching up). Started with the 12 s sent meanwhile, over 200.
    let numbers: Vec<u16> = frames.iter().filter_map(|frame| frame.number).collect();
    let advanced: u32 = numbers.windows(2).map(|pair| u32::from((pair[1] + CLIP_FRAMES - pair[0]) % CLIP_FRAMES)).sum();
    assert!(advanced <= 90, "the pictures advanced by {advanced} in 2 s: {numbers:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_srt_stream_from_a_sender_taking_one_caller_passes_through_on_one_connection() {
    let _lock = exclusive().await;
    let camera = clip("srt-camera.mp4", CAMERA_H264);
    let port = free_udp_port();
    // An encoder in SRT listener mode (as OBS offers): it serves one caller and stops when
    // that caller leaves, so checking the stream and reading it must share a connection.
    let mut sender = live_sender(&camera, "mpegts", &[], &format!("srt://127.0.0.1:{port}?mode=listener"));
    let url = format!("srt://127.0.0.1:{port}");
    let server = unreduced_server_for(url.parse().unwrap()).await;
    assert_live_stream_passes_through(&server).await;
    assert_eq!(sender.0.try_wait().unwrap(), None, "the sender still sends");
    assert!(!ffmpegs_reading(&url).is_empty(), "an ffmpeg receives the stream");
    server.stop().await;
    assert!(ffmpegs_reading(&url).is_empty(), "the ffmpeg receiving the stream outlived the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_rtmp_stream_with_b_frames_from_a_sender_taking_one_caller_is_encoded_on_one_connection() {
    let _lock = exclusive().await;
    let path = clip("rtmp-b-frames.mp4", &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "15"]);
    let port = free_tcp_port();
    // `-listen 1`: the sender is the RTMP server, for one client. The check finds B-frames,
    // so the stream is decoded and encoded, read from the connection the check used.
    let _sender = live_sender(&path, "flv", &["-listen", "1"], &format!("rtmp://127.0.0.1:{port}/live/cam"));
    wait_for_tcp_listener(port);
    let server = unreduced_server_for(format!("rtmp://127.0.0.1:{port}/live/cam").parse().unwrap()).await;
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360));
    assert_live_frames_in_order(&mut viewer).await;
    let stats = server.app.stats();
    assert_eq!((stats.encoders_running, stats.frames_passed_through), (1, 0), "{stats:?}");
    server.stop().await;
}

/// The viewer's next frame with a number (the source's) or without ("No Input", "The End"), within
/// 15 s.
async fn next_frame_numbered(viewer: &mut Viewer, numbered: bool) -> DecodedFrame {
    let by = Instant::now() + Duration::from_secs(15);
    while Instant::now() < by {
        if let Some(frame) = viewer.next_frame(Duration::from_secs(1)).await
            && frame.number.is_some() == numbered
        {
            return frame;
        }
    }
    panic!("no {} frame within 15 s", if numbered { "numbered" } else { "\"No Input\"" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_infinite_mode_a_live_rtmp_sender_that_stops_and_comes_back_plays_again() {
    let _lock = exclusive().await;
    let camera = clip("rtmp-camera.mp4", CAMERA_H264);
    let port = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/cam");
    let sender = live_sender(&camera, "flv", &["-listen", "1"], &url);
    wait_for_tcp_listener(port);
    let server = server_with(url.parse().unwrap(), |options| {
        options.set("enable_infinite_frames", &serde_json::json!(true)).unwrap()
    })
    .await;
    let (mut viewer, _) = server.playing_viewer().await;
    next_frame_numbered(&mut viewer, true).await;

    // The sender goes away: "No Input" plays. It comes back: the stream is received again,
    // over a new connection, for the same viewer.
    drop(sender);
    next_frame_numbered(&mut viewer, false).await;
    let _sender = live_sender(&camera, "flv", &["-listen", "1"], &url);
    wait_for_tcp_listener(port);
    next_frame_numbered(&mut viewer, true).await;
    assert_live_frames_in_order(&mut viewer).await;
    assert_eq!(server.app.stats().viewers, 1, "the viewer never had to reconnect");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_infinite_mode_a_live_stream_not_there_yet_is_waited_for() {
    let _lock = exclusive().await;
    let camera = clip("rtmp-camera.mp4", CAMERA_H264);
    let port = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/cam");
    // The server starts before the encoder, so its first connection is refused.
    plays_once_sent_in_infinite_mode(&url, || {
        let sender = live_sender(&camera, "flv", &["-listen", "1"], &url);
        wait_for_tcp_listener(port);
        sender
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_infinite_mode_a_udp_stream_not_sent_yet_does_not_hold_up_the_start() {
    let _lock = exclusive().await;
    let camera = clip("udp-camera.mp4", CAMERA_H264);
    let url = format!("udp://127.0.0.1:{}", free_udp_port());
    // Opening a UDP stream waits for its first packets, which do not come yet.
    plays_once_sent_in_infinite_mode(&url, || live_sender(&camera, "mpegts", &[], &format!("{url}?pkt_size=1316")))
        .await;
}

/// In infinite mode, a server whose live stream at `url` is not there yet starts all the
/// same, playing "No Input" to a viewer, which then gets the stream once `send` has
/// started sending it. (Decoded and encoded, so that the stream needs no seconds-long
/// passthrough check.)
async fn plays_once_sent_in_infinite_mode(url: &str, send: impl FnOnce() -> Reaped) {
    let server = server_with(url.parse().unwrap(), |options| {
        options.set("enable_infinite_frames", &serde_json::json!(true)).unwrap();
        options.set("h264_passthrough", &serde_json::json!(false)).unwrap();
    })
    .await;
    let (mut viewer, _) = server.playing_viewer().await;
    next_frame_numbered(&mut viewer, false).await;
    let _sender = send();
    next_frame_numbered(&mut viewer, true).await;
    assert_live_frames_in_order(&mut viewer).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_h264_passthrough_off_a_file_is_encoded_and_a_joiner_starts_at_once() {
    let _lock = exclusive().await;
    // A keyframe only at the start: passed through, a joiner would wait for the end.
    let path = clip("long-gop.mp4", &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "600"]);
    let server = server_with(SourceSpec::File(path), |options| {
        options.set("frame_size_reduction", &serde_json::json!(0)).unwrap();
        options.set("h264_passthrough", &serde_json::json!(false)).unwrap();
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360));
    let stats = server.app.stats();
    assert_eq!(stats.encoders_running, 1, "{stats:?}");
    assert_eq!(stats.frames_passed_through, 0, "{stats:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_file_with_b_frames_is_decoded_and_encoded_again() {
    let _lock = exclusive().await;
    let path = clip("b-frames.mp4", &["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "15"]);
    let server = unreduced_server_for(SourceSpec::File(path)).await;
    assert_eq!(server.app.stats().encoders_running, 1);
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360));
    let mut frames = vec![first];
    frames.extend(viewer.frames_during(Duration::from_secs(3)).await);
    let numbers: Vec<u16> = frames.iter().filter_map(|f| f.number).collect();
    assert!(numbers.len() >= 40, "only {} numbered frames: {numbers:?}", numbers.len());
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "in display order: {numbers:?}");
    assert_eq!(numbers.last(), Some(&(FRAMES as u16 - 1)));
    assert_eq!(server.app.stats().frames_passed_through, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_stream_is_decoded_and_encoded_again_when_frames_must_shrink() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("camera.mp4", CAMERA_H264), 0);
    let server = server_for(camera.url.parse().unwrap()).await;
    assert_eq!(server.app.stats().encoders_running, 1);
    assert_plays_to_the_end(&server).await;
    assert_eq!(server.app.stats().frames_passed_through, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_infinite_mode_an_rtsp_camera_that_drops_shows_no_input_then_passes_through_again() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("camera.mp4", CAMERA_H264), 0);
    let server = server_with(camera.url.parse().unwrap(), |options| {
        options.set("frame_size_reduction", &serde_json::json!(0)).unwrap();
        options.set("enable_infinite_frames", &serde_json::json!(true)).unwrap();
    })
    .await;
    let (mut viewer, _) = server.playing_viewer().await;

    // The camera goes away for good mid-stream: "No Input" from an encoder started for it.
    let port = camera.port();
    drop(camera);
    let no_input = viewer.frames_during(Duration::from_secs(2)).await;
    assert!(no_input.iter().rev().take(10).all(|f| f.number.is_none()), "\"No Input\" frames stand in");
    assert_eq!(server.app.stats().encoders_running, 1, "an encoder draws them");

    // The camera comes back on the same address: its H.264 passes through again.
    let camera = RtspServer::start(&clip("camera.mp4", CAMERA_H264), port);
    let back_by = Instant::now() + Duration::from_secs(5);
    let first_back = loop {
        let frame = viewer.next_frame(Duration::from_secs(1)).await.expect("frames keep coming");
        if frame.number.is_some() {
            break frame;
        }
        assert!(Instant::now() < back_by, "the camera's pictures did not come back");
    };
    assert_eq!(server.app.stats().encoders_running, 0, "the encoder stopped once the camera was back");
    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    let back: Vec<u16> = std::iter::once(&first_back).chain(&frames).map_while(|f| f.number).collect();
    assert!(back.len() >= 20, "the camera's pictures came back for the same viewer: {back:?}");
    assert!(back.windows(2).all(|pair| pair[0] < pair[1]), "{back:?}");
    assert_eq!(server.app.stats().viewers, 1, "the viewer never had to reconnect");
    server.stop().await;
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_an_rtsp_camera_hangs_does_not_wait_for_the_hang_to_be_noticed() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("camera.mp4", CAMERA_H264), 0);
    // Passed through, and decoded to be shrunk: both read the camera natively.
    for reduction in [0, 50] {
        let server = server_with(camera.url.parse().unwrap(), |options| {
            options.set("frame_size_reduction", &serde_json::json!(reduction)).unwrap()
        })
        .await;
        server.playing_viewer().await;
        camera.signal("STOP");
        let stopping = Instant::now();
        server.stop().await;
        let stopped_in = stopping.elapsed();
        camera.signal("CONT");
        // A camera is given up as hung after 5 s without a frame.
        assert!(
            stopped_in < Duration::from_secs(3),
            "stopping waited {stopped_in:?} (frame size reduction {reduction})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_stream_that_hangs_ends_after_5_s_and_never_holds_up_stopping() {
    let _lock = exclusive().await;
    // Six seconds of pictures (ffmpeg studies five before it starts), then the server sends
    // nothing more and never closes.
    let clip = scratch_dir().join("hanging.ts");
    make_frames(&clip, 180, CAMERA_H264);
    let url = serve_then_hang(&clip).await;

    // Stopped while it hangs: nothing would end ffmpeg's wait.
    let server = server_for(url.parse().unwrap()).await;
    let (mut viewer, _) = server.playing_viewer().await;
    let hangs_by = Instant::now() + Duration::from_secs(15);
    while viewer.next_frame(Duration::from_millis(500)).await.is_some() {
        assert!(Instant::now() < hangs_by, "the pictures never stopped");
    }
    let stopping = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    assert!(stopped.is_ok(), "stopping waited for the hung stream for 10 s");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopping waited {:?} for the hung stream",
        stopping.elapsed()
    );

    // Left to play, it is given up as stalled and ends with "The End".
    let server = server_for(url.parse().unwrap()).await;
    let (mut viewer, _) = server.playing_viewer().await;
    let ends_by = Instant::now() + Duration::from_secs(20);
    let the_end = loop {
        match viewer.next_frame(Duration::from_secs(1)).await {
            Some(frame) if frame.number.is_none() => break frame,
            _ => assert!(Instant::now() < ends_by, "no \"The End\" within 20 s"),
        }
    };
    assert_eq!((the_end.width, the_end.height), (320, 180), "\"The End\" at the stream's size");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_stream_that_is_not_h264_is_read_through_ffmpeg() {
    let _lock = exclusive().await;
    let camera = RtspServer::start(&clip("camera.mkv", MJPEG), 0);
    let server = server_for(camera.url.parse().unwrap()).await;
    let ffmpeg = Command::new("pgrep").args(["-f", &format!("ffmpeg.*{}", camera.url)]).output().unwrap();
    assert!(!ffmpeg.stdout.is_empty(), "ffmpeg reads the MJPEG stream");
    // ffmpeg probes a live stream for a while before its first frame: play to "The End".
    let (mut viewer, first) = server.playing_viewer().await;
    let mut frames = vec![first];
    while frames.last().unwrap().number.is_some() {
        frames.push(viewer.next_frame(Duration::from_secs(10)).await.expect("frames until \"The End\""));
    }
    let numbers: Vec<u16> = frames.iter().filter_map(|f| f.number).collect();
    assert!(numbers.len() >= 40, "only {} numbered frames: {numbers:?}", numbers.len());
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {numbers:?}");
    // ffmpeg takes RTP over UDP, where a frame still in flight when the sender's BYE
    // arrives can be lost: the stream must reach the camera's last few frames.
    let last = *numbers.last().unwrap();
    assert!(last >= FRAMES as u16 - 4, "the stream reached the camera's end, not just {last}: {numbers:?}");
    assert_eq!((frames[0].width, frames[0].height), (320, 180));
    server.stop().await;
}
