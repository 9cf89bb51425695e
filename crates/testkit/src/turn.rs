//! A real TURN server for tests: coturn (Debian's `coturn` package, program `turnserver`)
//! on loopback with one long-term user, relaying on loopback too.

use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running coturn. Dropping it stops the server.
#[derive(Debug)]
pub struct TurnServer {
    /// The port it listens on (UDP and TCP).
    pub port: u16,
    /// The user name clients authenticate with.
    pub username: String,
    /// That user's password.
    pub password: String,
    process: Child,
    dir: PathBuf,
}

impl TurnServer {
    /// Starts coturn on a free loopback port and waits until it listens.
    pub fn start() -> std::io::Result<TurnServer> {
        let program = std::env::var("TURNSERVER").unwrap_or_else(|_| "turnserver".into());
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("webgear-turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (username, password) = ("webgear".to_owned(), "relay-me".to_owned());
        let process = Command::new(&program)
            .args(["-n", "--verbose", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args(["--min-port=49200", "--max-port=49400", "--lt-cred-mech", "--realm=webgear.test"])
            .arg(format!("--user={username}:{password}"))
            // Our server is on loopback too; coturn refuses to relay there unless told.
            .args(["--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .arg(format!("--pidfile={}", dir.join("turnserver.pid").display()))
            .arg(format!("--userdb={}", dir.join("turndb").display()))
            .arg(format!("--log-file={}", dir.join("turn.log").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| {
                std::io::Error::new(error.kind(), format!("could not start {program} (install coturn): {error}"))
            })?;
        let mut server = TurnServer { port, username, password, process, dir };
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = server.process.try_wait()? {
                return Err(std::io::Error::other(format!("{program} exited at start with {status}")));
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(std::io::Error::other(format!("{program} did not listen on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The server as an ICE server URL with its credentials, as webgear-rtc's
    /// `ice_servers` option reads it.
    pub fn url(&self) -> String {
        format!("turn:{}:{}@127.0.0.1:{}?transport=udp", self.username, self.password, self.port)
    }

    /// What coturn logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("turn.log")).unwrap_or_default()
    }
}

impl Drop for TurnServer {
    fn drop(&mut self) {
        // Best effort: the process may have exited already.
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
