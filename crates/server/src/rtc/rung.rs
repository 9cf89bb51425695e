//! Which rung of the ladder a viewer should be on, from what is known of its link: down at
//! once when the link no longer carries its rung, up one rung at a time once the link has
//! carried the rung above for a while. Sans-IO: the time comes with each report.

use std::time::{Duration, Instant};

/// The share of an estimate a rung may use: the rest is headroom for retransmissions, RTCP
/// and the estimate's own error.
const USABLE_SHARE: f64 = 0.85;

/// Going up needs this much more room than staying: without a margin a link right at a
/// rung's rate would flap between two rungs.
const UP_MARGIN: f64 = 1.15;

/// How long the link must carry the rung above before the viewer is moved up.
const UP_HOLD: Duration = Duration::from_secs(3);

/// How long after a move down no move up is tried: the link just failed the rung above.
const UP_AFTER_DOWN: Duration = Duration::from_secs(6);

/// A viewer is moved down one rung for congestion or losses at most this often: a receiver
/// report covers about a second, and a queue takes time to drain.
const STEP_INTERVAL: Duration = Duration::from_secs(2);

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
    /// When the target last went down.
    last_down: Option<Instant>,
}

impl RungChoice {
    /// A viewer on a link of which only `estimate` is known yet: the best rung it carries.
    pub(crate) fn starting(estimate: u64, rates: &[u64]) -> Self {
        RungChoice { target: best_fitting(estimate, rates), room_above_since: None, last_down: None }
    }

    /// A viewer that stays where it is put.
    pub(crate) fn fixed(rung: usize) -> Self {
        RungChoice { target: rung, room_above_since: None, last_down: None }
    }

    pub(crate) fn target(&self) -> usize {
        self.target
    }

    /// Takes what is known of the link `now` (`rates`: what each rung needs, in bits per
    /// second) and returns the rung the viewer should be on. `congested`: the viewer's
    /// packets queue up faster than they leave, whatever the estimate says.
    pub(crate) fn update(&mut self, report: LinkReport, congested: bool, rates: &[u64], now: Instant) -> usize {
        let lowest = rates.len().saturating_sub(1);
        self.target = self.target.min(lowest);
        let stepping = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= STEP_INTERVAL);
        let one_down = (self.target + 1).min(lowest);
        let (mut down_to, room_above) = match report {
            LinkReport::Estimate(estimate) => {
                let room_above = self.target > 0 && fits(rates[self.target - 1], estimate as f64 / UP_MARGIN);
                (best_fitting(estimate, rates), room_above)
            }
            LinkReport::Loss(lost) => {
                let down = if lost > HIGH_LOSS && stepping { one_down } else { self.target };
                (down, lost < LOW_LOSS && self.target > 0)
            }
        };
        if congested && stepping {
            down_to = down_to.max(one_down);
        }
        if down_to > self.target {
            self.target = down_to;
            self.last_down = Some(now);
            self.room_above_since = None;
            return self.target;
        }
        if !room_above {
            self.room_above_since = None;
            return self.target;
        }
        let hold = if matches!(report, LinkReport::Loss(_)) { LOSS_UP_HOLD } else { UP_HOLD };
        let since = *self.room_above_since.get_or_insert(now);
        let settled = self.last_down.is_none_or(|at| now.saturating_duration_since(at) >= UP_AFTER_DOWN);
        if settled && now.saturating_duration_since(since) >= hold {
            self.target -= 1;
            self.room_above_since = None;
        }
        self.target
    }
}

/// Whether a rung needing `rate` fits a link carrying `estimate`.
fn fits(rate: u64, estimate: f64) -> bool {
    rate as f64 <= estimate * USABLE_SHARE
}

/// The best rung a link carrying `estimate` fits, or the lowest.
fn best_fitting(estimate: u64, rates: &[u64]) -> usize {
    rates.iter().position(|&rate| fits(rate, estimate as f64)).unwrap_or(rates.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [u64; 3] = [2_000_000, 600_000, 200_000];

    #[test]
    fn a_joiner_starts_on_the_best_rung_its_link_is_thought_to_carry() {
        assert_eq!(RungChoice::starting(1_000_000, &RATES).target(), 1);
        assert_eq!(RungChoice::starting(5_000_000, &RATES).target(), 0);
        assert_eq!(RungChoice::starting(100_000, &RATES).target(), 2);
    }

    #[test]
    fn the_rung_follows_the_estimate_down_at_once_and_up_one_rung_after_holding() {
        let start = Instant::now();
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        let mut choice = RungChoice::starting(5_000_000, &RATES);
        let mut follow = |estimate: u64, secs: f64| choice.update(LinkReport::Estimate(estimate), false, &RATES, at(secs));
        // The link falls to 300 kbit/s: straight to the lowest rung.
        assert_eq!(follow(300_000, 0.0), 2);
        // It recovers: nothing for a while after the fall, then one rung at a time, each
        // after the link has carried the next for long enough.
        assert_eq!(follow(5_000_000, 1.0), 2);
        assert_eq!(follow(5_000_000, 5.0), 2, "too soon after going down");
        assert_eq!(follow(5_000_000, 6.5), 1);
        assert_eq!(follow(5_000_000, 7.0), 1);
        assert_eq!(follow(5_000_000, 10.0), 0);
        // Right at a rung's rate it stays there, neither flapping down nor up.
        assert_eq!(follow(2_000_000 * 100 / 85 + 1, 20.0), 0);
        assert_eq!(follow(700_000 * 100 / 85, 21.0), 1);
        assert_eq!(follow(700_000 * 100 / 85, 40.0), 1, "the rung above needs a margin to move up");
    }

    #[test]
    fn a_congested_viewer_goes_down_a_rung_whatever_the_estimate() {
        let mut choice = RungChoice::fixed(0);
        assert_eq!(choice.update(LinkReport::Estimate(5_000_000), true, &RATES, Instant::now()), 1);
    }

    #[test]
    fn with_only_losses_known_heavy_loss_steps_down_and_a_clean_link_steps_up_slowly() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut choice = RungChoice::fixed(0);
        let mut follow = |lost: f32, secs: u64| choice.update(LinkReport::Loss(lost), false, &RATES, at(secs));
        assert_eq!(follow(0.2, 0), 1);
        assert_eq!(follow(0.2, 1), 1, "one step per interval");
        assert_eq!(follow(0.2, 2), 2);
        assert_eq!(follow(0.05, 3), 2);
        assert_eq!(follow(0.0, 4), 2);
        assert_eq!(follow(0.0, 13), 2);
        assert_eq!(follow(0.0, 14), 1);
    }
}
