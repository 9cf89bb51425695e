//! Which rung of the ladder a viewer should be on, from what is known of its link: down
//! once the link has not carried its rung for a moment (at once when it carries less than
//! half), up one rung at a time once the link has carried the rung above, with a margin,
//! for a while. Sans-IO: the time comes with each report.

use std::time::{Duration, Instant};

/// Going up needs this much more room than the rung needs: headroom for retransmissions
/// and the estimate's own error, and without a margin a link right at a rung's rate would
/// flap between two rungs. Staying needs none: a bandwidth estimator held back by what is
/// sent (an application-limited stream) reports little more than that.
const UP_MARGIN: f64 = 1.25;

/// How long the link must carry the rung above before the viewer is moved up.
const UP_HOLD: Duration = Duration::from_secs(3);

/// How long after a move down no move up is tried: the link just failed the rung above.
const UP_AFTER_DOWN: Duration = Duration::from_secs(6);

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
    /// When the target last went down.
    last_down: Option<Instant>,
}

impl RungChoice {
    /// A viewer on `rung`, until its link says otherwise.
    pub(crate) fn fixed(rung: usize) -> Self {
        RungChoice { target: rung, room_above_since: None, short_since: None, last_down: None }
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
                let best = rates.iter().position(|&rate| rate as f64 <= estimate).unwrap_or(lowest);
                let far_short = (rates[self.target] as f64) * FAR_SHORT > estimate;
                let short_for =
                    if best > self.target { since(Some(*self.short_since.get_or_insert(now))) } else { Duration::ZERO };
                if best <= self.target {
                    self.short_since = None;
                }
                let down_to = if far_short || short_for >= DOWN_HOLD { best } else { self.target };
                let room_above = self.target > 0 && rates[self.target - 1] as f64 * UP_MARGIN <= estimate;
                (down_to, room_above, UP_HOLD)
            }
            LinkReport::Loss(lost) => {
                let stepping = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= LOSS_STEP_INTERVAL);
                let down_to = if lost > HIGH_LOSS && stepping { (self.target + 1).min(lowest) } else { self.target };
                (down_to, lost < LOW_LOSS && self.target > 0, LOSS_UP_HOLD)
            }
        };
        if down_to > self.target {
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
        let settled = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= UP_AFTER_DOWN);
        if settled && held >= up_hold {
            self.target -= 1;
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
    fn the_rung_follows_the_estimate_down_and_up_one_rung_after_holding() {
        let mut follow = follower(Instant::now());
        let mut estimate = |bps: u64, secs: f64| follow(LinkReport::Estimate(bps), secs);
        // The link falls to 300 kbit/s, under half the rung: straight to the lowest rung.
        assert_eq!(estimate(300_000, 0.0), 2);
        // It recovers: nothing for a while after the fall, then one rung at a time, each
        // after the link has carried the next, with a margin, for long enough.
        assert_eq!(estimate(5_000_000, 1.0), 2);
        assert_eq!(estimate(5_000_000, 5.0), 2, "too soon after going down");
        assert_eq!(estimate(5_000_000, 6.5), 1);
        assert_eq!(estimate(5_000_000, 7.0), 1);
        assert_eq!(estimate(5_000_000, 10.0), 0);
        // A little short of the rung: down only once that has lasted.
        assert_eq!(estimate(1_900_000, 20.0), 0);
        assert_eq!(estimate(1_900_000, 20.5), 0);
        assert_eq!(estimate(2_000_000, 20.8), 0, "it fits again: the wait starts over");
        assert_eq!(estimate(1_900_000, 21.0), 0);
        assert_eq!(estimate(1_900_000, 22.0), 1);
        // Right at the rung above, it stays: moving up needs a margin.
        assert_eq!(estimate(2_400_000, 40.0), 1);
        assert_eq!(estimate(2_400_000, 50.0), 1);
        assert_eq!(estimate(2_500_000, 51.0), 1);
        assert_eq!(estimate(2_500_000, 54.0), 0);
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
