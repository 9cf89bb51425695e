//! What benchmarks read from the server's side: its process's CPU time and memory (from
//! `/proc`), and quantiles of a histogram it exposes in Prometheus text.

use std::io;

/// A server process's resource use at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU seconds used since the process started.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

impl ProcessSample {
    /// Reads `/proc` for process `pid` and every process it started, directly or not: a
    /// server's work done by a helper (the ffmpeg that decodes its source) is its cost too.
    pub fn of(pid: u32) -> io::Result<ProcessSample> {
        let own = Usage::of(pid)?;
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(other) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            // Processes may end while being read; they no longer count.
            if let Ok(usage) = Usage::of(other) {
                parents.push((other, usage));
            }
        }
        let mut tree = vec![pid];
        let mut total = ProcessSample { cpu_seconds: own.cpu_seconds, rss_bytes: own.rss_bytes };
        let mut index = 0;
        while let Some(&parent) = tree.get(index) {
            for (child, usage) in parents.iter().filter(|(_, usage)| usage.parent == parent) {
                tree.push(*child);
                total.cpu_seconds += usage.cpu_seconds;
                total.rss_bytes += usage.rss_bytes;
            }
            index += 1;
        }
        Ok(total)
    }
}

/// One process's CPU time, memory and parent.
struct Usage {
    cpu_seconds: f64,
    rss_bytes: u64,
    parent: u32,
}

impl Usage {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`.
    fn of(pid: u32) -> io::Result<Usage> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc format: {what}"));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name: the parent is field 4, utime and
        // stime are fields 14 and 15.
        let fields: Vec<&str> = stat.rsplit_once(") ").ok_or_else(|| bad("stat"))?.1.split_whitespace().collect();
        let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok());
        let cpu_ticks = ticks(11).zip(ticks(12)).map(|(user, system)| user + system).ok_or_else(|| bad("stat"))?;
        let parent = fields.get(1).and_then(|field| field.parse().ok()).ok_or_else(|| bad("stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        // Kernel threads have no resident set.
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Ok(Usage { cpu_seconds: cpu_ticks / clock_ticks_per_second(), rss_bytes: rss_kib * 1024, parent })
    }
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let output = std::process::Command::new("getconf").arg("CLK_TCK").output();
        output.ok().and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok()).unwrap_or(100.0)
    })
}

/// The cumulative buckets (`le` bound, count) of histogram `name` in Prometheus text.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (bound, value) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, value.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound of the bucket holding quantile `q` of the observations made between two
/// readings of the same histogram's buckets; `None` when none were made.
pub fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|&(bound, count)| {
            let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0.0, |(_, c)| *c);
            (bound, count - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts.iter().find(|(_, cumulative)| *cumulative >= q * total).map(|(bound, _)| *bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_measured_with_the_processes_it_started() {
        let own = Usage::of(std::process::id()).unwrap();
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let child_usage = Usage::of(child.id()).unwrap();
        let tree = ProcessSample::of(std::process::id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(child_usage.parent, std::process::id());
        assert!(child_usage.rss_bytes > 0);
        assert!(tree.rss_bytes >= own.rss_bytes + child_usage.rss_bytes, "the child's memory is counted");
        assert!(tree.cpu_seconds >= own.cpu_seconds);
    }

    #[test]
    fn quantiles_come_from_the_bucket_counts_added_between_readings() {
        let text = |a: u32, b: u32, c: u32| {
            format!(
                "# TYPE x histogram\nx_bucket{{le=\"0.001\"}} {a}\nx_bucket{{le=\"0.01\"}} {b}\nx_bucket{{le=\"+Inf\"}} {c}\nx_count {c}\n"
            )
        };
        let before = histogram_buckets(&text(5, 5, 5), "x");
        let after = histogram_buckets(&text(5, 95, 105), "x");
        assert_eq!(after, vec![(0.001, 5.0), (0.01, 95.0), (f64::INFINITY, 105.0)]);
        assert_eq!(quantile_between(&before, &after, 0.5), Some(0.01));
        assert_eq!(quantile_between(&before, &after, 0.99), Some(f64::INFINITY));
        assert_eq!(quantile_between(&after, &after, 0.5), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = ProcessSample::of(std::process::id()).unwrap();
        assert!(sample.rss_bytes > 0 && sample.cpu_seconds >= 0.0, "{sample:?}");
    }
}
