//! Measures a running server the way viewers experience it, with decoding viewers.
//!
//! - `webgear-probe joins --url http://127.0.0.1:8000 --count 20`: joins one viewer at a
//!   time and reports time to first decoded frame (from posting the offer).
//! - `webgear-probe hold --url ... --viewers 10 --seconds 10 [--server-pid PID]`: holds N
//!   viewers, reports each one's decoded frame rate and, given the server's pid, the
//!   server's CPU use over the same window.

#![allow(clippy::unwrap_used)] // a measuring tool: failing loudly is the right answer

use std::time::Duration;

use clap::{Parser, Subcommand};
use webgear_testkit::Viewer;
use webgear_testkit::load::percentile;
use webgear_testkit::server_side::ProcessSample;

#[derive(Parser)]
#[command(about)]
struct Args {
    /// The server's base URL; offers go to `<url>/offer`.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Time to first decoded frame over sequential joins.
    Joins {
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Frame rate of N concurrent viewers, and the server's CPU use meanwhile.
    Hold {
        #[arg(long, default_value_t = 1)]
        viewers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process id, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let offer_url = format!("{}/offer", args.url.trim_end_matches('/'));
    match args.command {
        Mode::Joins { count } => joins(&offer_url, count).await,
        Mode::Hold { viewers, seconds, server_pid } => hold(&offer_url, viewers, seconds, server_pid).await,
    }
}

async fn joins(offer_url: &str, count: usize) {
    let mut millis = Vec::with_capacity(count);
    for _ in 0..count {
        let mut viewer = Viewer::connect(offer_url).await.unwrap();
        let first = viewer.next_frame(Duration::from_secs(10)).await.expect("a first frame");
        millis.push((first.arrived_at - viewer.offered_at).as_secs_f64() * 1000.0);
        viewer.close().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "time to first decoded frame over {count} joins: p50 {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        percentile(&mut millis, 0.5),
        percentile(&mut millis, 0.95),
        percentile(&mut millis, 0.0),
        percentile(&mut millis, 1.0),
    );
}

async fn hold(offer_url: &str, count: usize, seconds: u64, server_pid: Option<u32>) {
    let mut viewers = Vec::with_capacity(count);
    for _ in 0..count {
        viewers.push(Viewer::connect(offer_url).await.unwrap());
    }
    for viewer in &mut viewers {
        viewer.next_frame(Duration::from_secs(10)).await.expect("every viewer plays");
    }
    let window = Duration::from_secs(seconds);
    let cpu_seconds = |pid: u32| ProcessSample::of(pid).unwrap().cpu_seconds;
    let cpu_before = server_pid.map(cpu_seconds);
    if count == 0 {
        tokio::time::sleep(window).await;
    }
    let tasks: Vec<_> = viewers
        .into_iter()
        .map(|mut viewer| tokio::spawn(async move { viewer.frames_during(window).await.len() }))
        .collect();
    let mut rates = Vec::with_capacity(count);
    for task in tasks {
        rates.push(task.await.unwrap() as f64 / window.as_secs_f64());
    }
    let cpu_after = server_pid.map(cpu_seconds);
    if !rates.is_empty() {
        let (slowest, median, fastest) =
            (percentile(&mut rates, 0.0), percentile(&mut rates, 0.5), percentile(&mut rates, 1.0));
        println!("{count} viewers over {seconds} s: decoded fps min {slowest:.1}, p50 {median:.1}, max {fastest:.1}");
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let share = (after - before) / window.as_secs_f64() * 100.0;
        println!("server CPU with {count} viewers: {share:.1}% of one core");
    }
}
