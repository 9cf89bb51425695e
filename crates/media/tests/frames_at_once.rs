//! A frame read through ffmpeg reaches the reader as soon as ffmpeg has it, not when the
//! frame after it arrives: a live stream must not lag a frame interval (or several) behind
//! its sender. The stream is served over HTTP by the test, which decides when each frame
//! is sent and holds the connection open in between, as a live sender does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use webgear_media::source::FrameSource;
use webgear_media::source::ffmpeg::{FfmpegOptions, FfmpegSource};

const WIDTH: usize = 64;
const HEIGHT: usize = 48;
/// Long enough for ffmpeg to deliver a frame on a busy machine; a held frame never comes.
const PATIENCE: Duration = Duration::from_secs(10);

/// One YUV4MPEG2 frame whose luma is `brightness` everywhere.
fn y4m_frame(brightness: u8) -> Vec<u8> {
    let mut frame = b"FRAME\n".to_vec();
    frame.resize(frame.len() + WIDTH * HEIGHT, brightness);
    frame.resize(frame.len() + WIDTH * HEIGHT / 2, 128);
    frame
}

/// Answers one HTTP request on `connection` with a YUV4MPEG2 stream of unknown length.
fn start_y4m_response(connection: &mut TcpStream) {
    let mut request = BufReader::new(connection.try_clone().unwrap());
    let mut line = String::new();
    while request.read_line(&mut line).unwrap() > 2 {
        line.clear();
    }
    let header = format!("YUV4MPEG2 W{WIDTH} H{HEIGHT} F30:1 Ip A1:1 C420jpeg\n");
    let response = "HTTP/1.1 200 OK\r\nContent-Type: video/x-yuv4mpeg\r\nConnection: close\r\n\r\n";
    connection.write_all(response.as_bytes()).unwrap();
    connection.write_all(header.as_bytes()).unwrap();
}

/// Serves a live YUV4MPEG2 stream at the returned URL. The first request (ffprobe's) gets
/// a few frames; the second (ffmpeg's) gets a frame for each brightness sent on `frames`,
/// when it is sent, and the stream ends when `frames` is dropped.
fn serve_live_stream(frames: Receiver<u8>) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let url = format!("http://127.0.0.1:{}/live.y4m", listener.local_addr().unwrap().port());
    thread::spawn(move || {
        let mut probe = listener.accept().unwrap().0;
        start_y4m_response(&mut probe);
        for _ in 0..30 {
            probe.write_all(&y4m_frame(0)).unwrap();
        }
        drop(probe);
        let mut reader = listener.accept().unwrap().0;
        start_y4m_response(&mut reader);
        for brightness in frames {
            if reader.write_all(&y4m_frame(brightness)).is_err() {
                return;
            }
        }
    });
    url
}

#[test]
fn each_frame_is_read_before_the_next_one_is_sent() {
    let (send_frame, frames_to_send) = mpsc::channel();
    let url = serve_live_stream(frames_to_send);
    let mut source = FfmpegSource::open(&url, &FfmpegOptions::default()).unwrap();
    let (frame_read, frames_read) = mpsc::channel();
    let reader = thread::spawn(move || {
        while let Ok(Some(frame)) = source.read() {
            if frame_read.send(frame.data()[0]).is_err() {
                break;
            }
        }
        source.stop();
    });

    // ffmpeg takes in some of a stream before its first frame comes out: dark frames until
    // one does, then lighter ones one at a time, each due before the next is sent.
    let warming_up = Instant::now();
    while frames_read.try_recv().is_err() {
        assert!(warming_up.elapsed() < PATIENCE, "no frame read in {PATIENCE:?} of sending");
        send_frame.send(0).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    for brightness in [100, 150, 200, 250] {
        send_frame.send(brightness).unwrap();
        let sent = Instant::now();
        loop {
            match frames_read.recv_timeout(PATIENCE.saturating_sub(sent.elapsed())) {
                Ok(read) if read.abs_diff(brightness) <= 2 => break,
                Ok(dark) => assert!(dark < 100, "frame of brightness {dark} read while {brightness} was due"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("the frame of brightness {brightness} was not read in {PATIENCE:?}: held for the next")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("the stream ended before its last frame was read"),
            }
        }
    }
    drop(send_frame);
    reader.join().unwrap();
}
