//! Which rung of the ladder a viewer should be on, from what is known of its link: down
//! once the link has not carried its rung for a moment (at once when it carries less than
//! half), and up one rung at a time, as a trial, once the link has carried its rung for a
//! while. A viewer's own estimate (REMB) follows what it receives, so only trying the rung
//! above tells whether the link carries it; a trial that fails is tried again after twice
//! as long. Sans-IO: the time comes with each report.

use std::time::{Duration, Instant};

/// A link whose estimate is at least this share of the rung's rate carries it: an estimate
/// made from what the viewer receives sits at about that rate, a little under or over.
const CARRIED_SHARE: f64 = 0.85;

/// How long the link must carry the viewer's rung before the rung above is tried.
const UP_HOLD: Duration = Duration::from_secs(3);

/// How long after a move down the rung above is tried again, at first; each trial that
/// fails (a move down within [`UP_TRIAL`] of the move up) doubles it, up to
/// [`MAX_UP_BACKOFF`]; one that holds resets it.
const UP_AFTER_DOWN: Duration = Duration::from_secs(6);
const UP_TRIAL: Duration = Duration::from_secs(10);
const MAX_UP_BACKOFF: Duration = Duration::from_secs(60);

/// How long the link may carry less than the viewer's rung before the viewer is moved
/// down: an estimate lags a rung whose rate jumps (a source passed through, a burst of
/// keyframes) by about this while the estimator probes for more.
const DOWN_HOLD: Duration = Duration::from_secs(1);

/// A link carrying less than this share of the viewer's rung moves it down at once.
const FAR_SHORT: f64 = 0.5;

/// With only losses known, a viewer is moved down one rung at most this often: a receiver
/// report covers about a second.
const LOSS_STEP_INTERVAL: Duration = Duration::from_secs(2);

/// With only losses known: a share lost above this moves the viewer down a rung, and
/// below [`LOW_LOSS`], held for [`LOSS_UP_HOLD`], up a rung.
const HIGH_LOSS: f32 = 0.10;
const LOW_LOSS: f32 = 0.02;
const LOSS_UP_HOLD: Duration = Duration::from_secs(10);

/// What is known of a viewer's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LinkReport {
    /// The bandwidth it carries, in bits per second: the estimate from the viewer's
    /// transport-wide feedback, or the one the viewer sends (REMB).
    Estimate(u64),
    /// Only the share of packets the viewer reports lost (receiver reports).
    Loss(f32),
}

/// A viewer's rung choice; rungs are numbered from the full-size one (0) down.
#[derive(Debug)]
pub(crate) struct RungChoice {
    target: usize,
    /// Since when the link has carried the rung above the target.
    room_above_since: Option<Instant>,
    /// Since when the link has carried less than the target.
    short_since: Option<Instant>,
    /// When the target last went down, and up.
    last_down: Option<Instant>,
    last_up: Option<Instant>,
    /// How long after a move down the rung above is tried again.
    up_backoff: Duration,
}

impl RungChoice {
    /// A viewer on `rung`, until its link says otherwise.
    pub(crate) fn fixed(rung: usize) -> Self {
        RungChoice {
            target: rung,
            room_above_since: None,
            short_since: None,
            last_down: None,
            last_up: None,
            up_backoff: UP_AFTER_DOWN,
        }
    }

    pub(crate) fn target(&self) -> usize {
        self.target
    }

    /// Takes what is known of the link `now` (`rates`: what each rung needs, in bits per
    /// second) and returns the rung the viewer should be on.
    pub(crate) fn update(&mut self, report: LinkReport, rates: &[u64], now: Instant) -> usize {
        let lowest = rates.len().saturating_sub(1);
        self.target = self.target.min(lowest);
        let since = |at: Option<Instant>| at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let (down_to, room_above, up_hold) = match report {
            LinkReport::Estimate(estimate) => {
                let estimate = estimate as f64;
                let best = rates.iter().position(|&rate| rate as f64 * CARRIED_SHARE <= estimate).unwrap_or(lowest);
                let far_short = (rates[self.target] as f64) * FAR_SHORT > estimate;
                let short_for =
                    if best > self.target { since(Some(*self.short_since.get_or_insert(now))) } else { Duration::ZERO };
                if best <= self.target {
                    self.short_since = None;
                }
                let down_to = if far_short || short_for >= DOWN_HOLD { best } else { self.target };
                let room_above = self.target > 0 && best <= self.target;
                (down_to, room_above, UP_HOLD)
            }
            LinkReport::Loss(lost) => {
                let stepping = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= LOSS_STEP_INTERVAL);
                let down_to = if lost > HIGH_LOSS && stepping { (self.target + 1).min(lowest) } else { self.target };
                (down_to, lost < LOW_LOSS && self.target > 0, LOSS_UP_HOLD)
            }
        };
        if down_to > self.target {
            let failed_trial = self.last_up.is_some_and(|at| now.saturating_duration_since(at) < UP_TRIAL);
            self.up_backoff = if failed_trial { (self.up_backoff * 2).min(MAX_UP_BACKOFF) } else { UP_AFTER_DOWN };
            self.target = down_to;
            self.last_down = Some(now);
            self.room_above_since = None;
            self.short_since = None;
            return self.target;
        }
        if !room_above {
            self.room_above_since = None;
            return self.target;
        }
        let held = since(Some(*self.room_above_since.get_or_insert(now)));
        let settled = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= self.up_backoff);
        if settled && held >= up_hold {
            self.target -= 1;
            self.last_up = Some(now);
            self.room_above_since = None;
        }
        self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u64; 3] = [2_000_000, 600_000, 200_000];

    fn follower(start: Instant) -> impl FnMut(LinkReport, f64) -> usize {
        let mut choice = RungChoice::fixed(0);
        move |report, secs| choice.update(report, &RATES, start + Duration::from_secs_f64(secs))
    }

    #[test]
    fn the_rung_follows_the_estimate_down_and_tries_the_rung_above_backing_off_when_it_fails() {
        let mut follow = follower(Instant::now());
        let mut estimate = |bps: u64, secs: f64| follow(LinkReport::Estimate(bps), secs);
        // The link falls to 300 kbit/s, under half the rung: straight to the lowest rung.
        assert_eq!(estimate(300_000, 0.0), 2);
        // It carries that rung: the one above is tried once it has for a while, and some
        // time after the fall.
        assert_eq!(estimate(210_000, 1.0), 2);
        assert_eq!(estimate(210_000, 5.0), 2, "too soon after going down");
        assert_eq!(estimate(210_000, 6.5), 1);
        // The trial fails (the estimate follows what arrives, short of the rung): back down
        // after a second, and the next trial waits twice as long.
        assert_eq!(estimate(400_000, 7.0), 1);
        assert_eq!(estimate(400_000, 8.0), 2);
        assert_eq!(estimate(210_000, 16.0), 2);
        assert_eq!(estimate(210_000, 19.5), 2, "the trial after a failed one waits 12 s");
        assert_eq!(estimate(210_000, 20.0), 1);
        // This one holds: the link carries the rung (a little under its rate is fine).
        assert_eq!(estimate(560_000, 21.0), 1);
        assert_eq!(estimate(560_000, 24.0), 0);
        assert_eq!(estimate(1_900_000, 30.0), 0);
        assert_eq!(estimate(1_600_000, 35.0), 0);
        assert_eq!(estimate(1_600_000, 36.0), 1, "short of the rung for a second");
        // A move down long after the last move up starts the back-off afresh.
        assert_eq!(estimate(600_000, 39.0), 1);
        assert_eq!(estimate(600_000, 42.0), 0);
    }

    #[test]
    fn with_only_losses_known_heavy_loss_steps_down_and_a_clean_link_steps_up_slowly() {
        let mut follow = follower(Instant::now());
        let mut lost = |share: f32, secs: f64| follow(LinkReport::Loss(share), secs);
        assert_eq!(lost(0.2, 0.0), 1);
        assert_eq!(lost(0.2, 1.0), 1, "one step per interval");
        assert_eq!(lost(0.2, 2.0), 2);
        assert_eq!(lost(0.05, 3.0), 2);
        assert_eq!(lost(0.0, 4.0), 2);
        assert_eq!(lost(0.0, 13.0), 2);
        assert_eq!(lost(0.0, 14.0), 1);
    }
}
