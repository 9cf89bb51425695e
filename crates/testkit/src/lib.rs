//! Test tools for webgear-rtc, used by its tests and benchmarks and usable against any
//! server that speaks WebGear_RTC's `/offer` protocol or WHEP ([`Endpoint`]):
//!
//! - [`Viewer`]: a real WebRTC peer (str0m on the client side) that completes ICE and DTLS,
//!   depacketizes and **decodes** the H.264 it receives, and reports every picture's size,
//!   the frame number the test pattern drew into it, and when it arrived.
//! - [`load::watch`]: a light viewer that does not decode, for holding many viewers in one
//!   process and measuring frame rate, loss and time to first frame.
//! - [`Browser`]: headless Chromium driven over WebDriver, to prove the default page plays.
//! - [`TurnServer`]: a real TURN server (coturn) on loopback.
//! - [`NatLab`]: a real 1:1 NAT (a network namespace behind iptables DNAT).
//! - [`PacketLoss`]: packets from a UDP port dropped at random by the kernel, as on a lossy
//!   link.
//! - [`server_side`]: a server process's CPU and memory, and its histograms' quantiles.
//! - [`Reaped`]: a child process killed and reaped when dropped.

mod browser;
pub mod load;
mod loss;
mod nat;
mod reaped;
pub mod server_side;
mod system;
mod turn;
mod viewer;
mod wire;

pub use browser::{Browser, BrowserError};
pub use loss::PacketLoss;
pub use nat::NatLab;
pub use reaped::Reaped;
pub use turn::{TurnAuth, TurnServer};
pub use viewer::{DecodedFrame, Endpoint, Viewer, ViewerError, WhepSession};

/// A UDP port on loopback that nothing listens on now.
///
/// # Panics
/// If no UDP port can be bound on loopback.
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port on loopback");
    socket.local_addr().expect("a bound socket's address").port()
}

/// The ffmpeg processes on this machine reading `input` (given as `-i input`): how tests
/// see that the ffmpeg receiving a live stream has gone.
pub fn ffmpegs_reading(input: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = cmdline.split(|&byte| byte == 0).collect();
            args.first().is_some_and(|program| program.ends_with(b"ffmpeg"))
                && args.windows(2).any(|pair| pair[0] == b"-i" && pair[1] == input.as_bytes())
        })
        .collect()
}
