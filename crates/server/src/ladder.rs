//! The rendition ladder: the sizes and bitrates a stream is encoded at. Each rung is
//! encoded once, for every viewer on it, and only while someone is on it; each viewer is
//! moved between rungs as its own link allows (see `rtc::rung`).

use serde_json::Value;
use webgear_media::encode::H264EncoderConfig;

/// The most rungs a ladder may have: each costs an encoder.
pub const MAX_RUNGS: usize = 4;

/// The lowest bitrate a rung may have, in bits per second.
const MIN_RUNG_BITRATE: u32 = 30_000;

/// One rendition: the stream scaled by `scale` (of each side), encoded at `bitrate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// Of each side of the stream's picture, from 1.0 (full size) down.
    pub scale: f64,
    /// The encoder's target, in bits per second.
    pub bitrate: u32,
}

/// Rungs from the full-size one down: each smaller and at a lower bitrate than the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    rungs: Vec<Rung>,
}

impl Default for Ladder {
    /// The default ladder for the default bitrate.
    fn default() -> Self {
        Ladder::default_for(H264EncoderConfig::default().bitrate_bps)
    }
}

impl Ladder {
    /// One full-size rung at `bitrate`: every viewer gets the same stream.
    pub fn single(bitrate: u32) -> Self {
        Ladder { rungs: vec![Rung { scale: 1.0, bitrate }] }
    }

    /// The ladder used when none is given: the full size at `bitrate`, half of each side at
    /// 30% of it, a quarter at 10% (for 2 Mbit/s: 600 and 200 kbit/s), the shares that
    /// OpenH264 turns into a clear picture at each size.
    pub fn default_for(bitrate: u32) -> Self {
        let share = |percent: u32| (u64::from(bitrate) * u64::from(percent) / 100) as u32;
        Ladder {
            rungs: vec![
                Rung { scale: 1.0, bitrate },
                Rung { scale: 0.5, bitrate: share(30).max(MIN_RUNG_BITRATE) },
                Rung { scale: 0.25, bitrate: share(10).max(MIN_RUNG_BITRATE) },
            ],
        }
    }

    /// The rungs, the full-size one first.
    pub fn rungs(&self) -> &[Rung] {
        &self.rungs
    }

    /// Reads a ladder: a list of `[scale, bitrate]` pairs (`[[1.0, "2.5M"], [0.5, "800k"]]`)
    /// or the same as text (`"1.0:2.5M,0.5:800k"`). What it expects if `value` is neither.
    pub(crate) fn read(value: &Value, read_bitrate: impl Fn(&Value) -> Option<u32>) -> Result<Ladder, String> {
        let pairs: Vec<(Value, Value)> = match value {
            Value::Array(rungs) => rungs
                .iter()
                .map(|rung| match rung.as_array().map(Vec::as_slice) {
                    Some([scale, bitrate]) => Some((scale.clone(), bitrate.clone())),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(ladder_expected)?,
            Value::String(text) => text
                .split(',')
                .map(|rung| {
                    let (scale, bitrate) = rung.split_once(':')?;
                    let scale = serde_json::from_str::<serde_json::Number>(scale.trim()).ok()?;
                    Some((Value::Number(scale), Value::from(bitrate.trim())))
                })
                .collect::<Option<_>>()
                .ok_or_else(ladder_expected)?,
            _ => return Err(ladder_expected()),
        };
        let rungs = pairs
            .iter()
            .map(|(scale, bitrate)| {
                let scale = scale.as_f64().filter(|scale| (0.05..=1.0).contains(scale))?;
                Some(Rung { scale, bitrate: read_bitrate(bitrate)? })
            })
            .collect::<Option<Vec<Rung>>>()
            .ok_or_else(ladder_expected)?;
        let descending =
            rungs.windows(2).all(|pair| pair[1].scale < pair[0].scale && pair[1].bitrate < pair[0].bitrate);
        if rungs.is_empty() || rungs.len() > MAX_RUNGS || rungs[0].scale != 1.0 || !descending {
            return Err(ladder_expected());
        }
        Ok(Ladder { rungs })
    }
}

fn ladder_expected() -> String {
    format!(
        "1 to {MAX_RUNGS} rungs of [scale, bitrate], the first of scale 1.0, each smaller and at a lower \
         bitrate than the one before (e.g. [[1.0, \"2.5M\"], [0.5, \"800k\"], [0.25, \"250k\"]] or \
         \"1.0:2.5M,0.5:800k,0.25:250k\")"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(value: Value) -> Result<Ladder, String> {
        Ladder::read(&value, |bitrate| match bitrate {
            Value::String(text) => text.strip_suffix('k').and_then(|k| k.parse::<u32>().ok()).map(|k| k * 1000),
            _ => bitrate.as_u64().map(|bps| bps as u32),
        })
    }

    #[test]
    fn a_ladder_reads_from_pairs_or_text() {
        let expected =
            Ladder { rungs: vec![Rung { scale: 1.0, bitrate: 2_000_000 }, Rung { scale: 0.5, bitrate: 500_000 }] };
        assert_eq!(read(json!([[1.0, 2_000_000], [0.5, "500k"]])), Ok(expected.clone()));
        assert_eq!(read(json!("1.0:2000k, 0.5:500k")), Ok(expected));
    }

    #[test]
    fn a_ladder_must_start_full_size_and_go_down() {
        for bad in [
            json!([]),
            json!([[0.5, 1000]]),
            json!([[1.0, 1000], [0.5, 2000]]),
            json!([[1.0, 1000], [1.0, 500]]),
            json!([[1.0, 1000], [0.5]]),
            json!([[1.0, 5000], [0.8, 4000], [0.6, 3000], [0.4, 2000], [0.2, 1000]]),
            json!("1.0-2M"),
            json!(3),
        ] {
            let error = read(bad.clone()).expect_err(&bad.to_string());
            assert!(error.contains("[scale, bitrate]"), "{error}");
        }
    }

    #[test]
    fn the_default_ladder_halves_the_size_twice_at_lower_rates() {
        let ladder = Ladder::default_for(2_000_000);
        let rungs: Vec<(f64, u32)> = ladder.rungs().iter().map(|rung| (rung.scale, rung.bitrate)).collect();
        assert_eq!(rungs, vec![(1.0, 2_000_000), (0.5, 600_000), (0.25, 200_000)]);
    }
}
