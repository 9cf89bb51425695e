//! The pace of a source that waits for its reader (a file, numbered images, the test
//! pattern): frames are handed out at the source's rate, however fast they could be read.
//! The reader sets when the pace starts and, by not reading, pauses it.

use std::thread;
use std::time::{Duration, Instant};

/// Makes each read wait until its frame is due. A reader that comes more than a frame
/// late (it paused while nobody watched, or the source itself was slow) starts the
/// schedule again from now: it is not handed a burst of the frames due meanwhile, so a
/// paused file goes on from where it was, at its pace.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next_due: Option<Instant>,
}

impl Pacer {
    /// A pace of `frame_rate` frames a second; none at all (every frame due at once) for a
    /// rate that is not a positive number.
    pub(crate) fn new(frame_rate: f64) -> Pacer {
        let period = Duration::try_from_secs_f64(1.0 / frame_rate).unwrap_or(Duration::ZERO);
        Pacer { period, next_due: None }
    }

    /// Waits until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let now = Instant::now();
        let due = match self.next_due {
            Some(due) if now.saturating_duration_since(due) <= self.period => due,
            _ => now,
        };
        if let Some(wait) = due.checked_duration_since(now) {
            thread::sleep(wait);
        }
        self.next_due = Some(due + self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_at_the_rate_and_a_late_reader_gets_no_burst() {
        let mut pacer = Pacer::new(50.0);
        let start = Instant::now();
        for _ in 0..6 {
            pacer.wait();
        }
        // The first frame is due at once, the sixth five periods (100 ms) later.
        assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());

        thread::sleep(Duration::from_millis(100));
        let resumed = Instant::now();
        pacer.wait();
        pacer.wait();
        // The schedule starts again at the resumption: the second frame after it waits a
        // whole period rather than being due at once to catch up.
        assert!(resumed.elapsed() >= Duration::from_millis(20), "{:?}", resumed.elapsed());
    }

    #[test]
    fn a_rate_that_is_not_positive_sets_no_pace() {
        for rate in [0.0, -1.0, f64::NAN] {
            let mut pacer = Pacer::new(rate);
            pacer.wait();
            pacer.wait();
            assert_eq!(pacer.period, Duration::ZERO);
        }
    }
}
