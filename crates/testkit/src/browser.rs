//! Headless Chromium driven through ChromeDriver (WebDriver), for tests that must prove a
//! real browser plays the stream.
//!
//! Needs Debian's `chromium` and `chromium-driver` (override the paths with the `CHROMIUM`
//! and `CHROMEDRIVER` environment variables).

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

/// Why the browser could not be started or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    /// ChromeDriver could not be started.
    #[error("could not start {program} (install Debian's chromium and chromium-driver): {source}")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ChromeDriver did not start listening in time.
    #[error("chromedriver did not start listening on port {0}")]
    DriverNotReady(u16),
    /// The WebDriver session could not be created.
    #[error("could not open a Chromium session: {0}")]
    Session(#[from] fantoccini::error::NewSessionError),
    /// A WebDriver command failed.
    #[error("browser command failed: {0}")]
    Command(#[from] fantoccini::error::CmdError),
    /// Local I/O failed.
    #[error("browser I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A headless Chromium session. Dropping it kills the driver and the browser, also when a
/// test panics before [`Browser::close`].
#[derive(Debug)]
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver and a fresh headless Chromium with an empty profile.
    pub async fn launch() -> Result<Browser, BrowserError> {
        let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A process group of its own, which Chromium and its helpers join, so that the
            // drop can end them all: killing ChromeDriver alone leaves its browser running.
            .process_group(0)
            .spawn()
            .map_err(|source| BrowserError::Spawn { program: chromedriver.clone(), source })?;
        let profile = std::env::temp_dir().join(format!("webgear-chromium-{}-{port}", std::process::id()));
        let mut browser = Browser { client: None, driver, profile };
        browser.wait_for_driver(port)?;

        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--autoplay-policy=no-user-gesture-required",
            "--window-size=1280,800",
        ]
        .map(String::from)
        .into_iter()
        .chain([format!("--user-data-dir={}", browser.profile.display())]);
        let mut capabilities = Map::new();
        capabilities
            .insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args.collect::<Vec<_>>() }));
        let client =
            ClientBuilder::rustls()?.capabilities(capabilities).connect(&format!("http://127.0.0.1:{port}")).await?;
        browser.client = Some(client);
        Ok(browser)
    }

    fn wait_for_driver(&mut self, port: u16) -> Result<(), BrowserError> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.driver.try_wait()? {
                return Err(BrowserError::Spawn {
                    program: "chromedriver".into(),
                    source: std::io::Error::other(format!("exited with {status}")),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(BrowserError::DriverNotReady(port))
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the client is set as soon as launch succeeds")
    }

    /// Opens `url` in the browser's window.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        Ok(self.client().goto(url).await?)
    }

    /// Evaluates a JavaScript function body (it may `return` a value) in the page.
    pub async fn eval(&self, script: &str) -> Result<Value, BrowserError> {
        Ok(self.client().execute(script, Vec::new()).await?)
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, BrowserError> {
        Ok(self.client().screenshot().await?)
    }

    /// Ends the session and stops the browser.
    pub async fn close(mut self) -> Result<(), BrowserError> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: the driver may already have exited, the profile may not exist.
        if let Ok(group) = i32::try_from(self.driver.id()) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The processes whose command line names `profile`: the Chromium a [`Browser`] started
    /// (its browser, zygote, renderer and utility processes all carry it).
    fn processes_using(profile: &std::path::Path) -> Vec<u32> {
        let needle = format!("--user-data-dir={}", profile.display());
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|&byte| byte == 0).any(|arg| arg == needle.as_bytes()))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_browser_dropped_without_closing_leaves_no_chromium_running() {
        let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
        browser.goto("about:blank").await.expect("the browser opens a page");
        let profile = browser.profile.clone();
        assert!(!processes_using(&profile).is_empty(), "Chromium runs with the session's profile");

        // As when a test panics halfway: no `close`, only the drop.
        drop(browser);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut left = processes_using(&profile);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = processes_using(&profile);
        }
        assert!(left.is_empty(), "Chromium processes {left:?} outlived their dropped Browser");
    }
}
