//! A real TURN server for tests: coturn (Debian's `coturn` package, program `turnserver`)
//! on loopback, relaying on loopback too, with either one long-term user or a shared secret
//! (the TURN REST API's time-limited credentials).

use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnAuth {
    /// One long-term user.
    User {
        /// The user name.
        username: String,
        /// Its password.
        password: String,
    },
    /// Credentials minted from this secret (coturn's `use-auth-secret`).
    Secret(String),
}

/// A running coturn. Dropping it stops the server.
#[derive(Debug)]
pub struct TurnServer {
    /// The port it listens on (UDP and TCP).
    pub port: u16,
    /// How clients authenticate.
    pub auth: TurnAuth,
    process: Child,
    dir: PathBuf,
}

impl TurnServer {
    /// Starts coturn with one long-term user on a free loopback port and waits until it
    /// listens.
    pub fn start() -> std::io::Result<TurnServer> {
        TurnServer::launch(TurnAuth::User { username: "webgear".into(), password: "relay-me".into() })
    }

    /// Starts coturn taking TURN REST API credentials minted from `secret`.
    pub fn start_with_secret(secret: &str) -> std::io::Result<TurnServer> {
        TurnServer::launch(TurnAuth::Secret(secret.to_owned()))
    }

    fn launch(auth: TurnAuth) -> std::io::Result<TurnServer> {
        let program = std::env::var("TURNSERVER").unwrap_or_else(|_| "turnserver".into());
        let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("webgear-turn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let auth_args = match &auth {
            TurnAuth::User { username, password } => {
                vec!["--lt-cred-mech".to_owned(), format!("--user={username}:{password}")]
            }
            TurnAuth::Secret(secret) => vec!["--use-auth-secret".to_owned(), format!("--static-auth-secret={secret}")],
        };
        let process = Command::new(&program)
            .args(["-n", "--verbose", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args(["--min-port=49200", "--max-port=49400", "--realm=webgear.test"])
            .args(auth_args)
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
        let mut server = TurnServer { port, auth, process, dir };
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

    /// The server as an ICE server URL, as webgear-rtc's `ice_servers` option reads it:
    /// with the user's credentials, or none when they are minted from the secret.
    pub fn url(&self) -> String {
        match &self.auth {
            TurnAuth::User { username, password } => {
                format!("turn:{username}:{password}@127.0.0.1:{}?transport=udp", self.port)
            }
            TurnAuth::Secret(_) => format!("turn:127.0.0.1:{}?transport=udp", self.port),
        }
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
