//! Video stabilisation (vidgear's `stabilize`): takes the shake out of a hand-held or
//! vibrating camera, in real time.
//!
//! Each frame's shift against the previous one is found by block matching on luma, coarse
//! on a quarter-size copy and then refined to the pixel at full size. The camera's path is
//! the sum of those shifts; the intended path is a smoothed copy of it, and each frame is
//! moved by the difference, uncovered borders black. The smoothing is causal (Holt's
//! double exponential smoothing, which follows a steady pan without lagging behind it) so
//! that no frame waits for later ones: vidgear's Stabilizer holds the stream back by its
//! smoothing radius. A frame too unlike the previous one (a cut) starts a new path.

use crate::frame::I420Frame;

/// vidgear's default `SMOOTHING_RADIUS`, in frames.
pub const DEFAULT_SMOOTHING_RADIUS: u32 = 25;

/// The coarse search runs on a copy this many times smaller on each side.
const COARSE_SCALE: usize = 4;
/// How far the coarse search looks, in coarse pixels (here ±32 full-size pixels).
const COARSE_RANGE: i32 = 8;
/// How far the full-size refinement looks around the coarse result: a whole coarse pixel,
/// as the coarse search can miss by one.
const FINE_RANGE: i32 = COARSE_SCALE as i32;
/// The refinement compares every this many pixels in each direction.
const FINE_STEP: usize = 4;
/// A best match whose mean luma difference exceeds this is a different picture: a cut.
const CUT_THRESHOLD: f64 = 40.0;
/// Corrections are limited to this fraction of each side.
const MAX_CORRECTION_FRACTION: f64 = 0.125;

/// Removes camera shake from consecutive frames of one stream.
#[derive(Debug)]
pub struct Stabilizer {
    /// How much of each new position the intended path takes in.
    level_gain: f64,
    /// How much of each change of the intended path its velocity takes in.
    trend_gain: f64,
    previous: Option<Reference>,
    /// Where the camera has been, relative to the start of the current path.
    path: (f64, f64),
    /// Where it was meant to be.
    intended: Axis2,
    /// How fast the intended path moves, in pixels per frame (a deliberate pan).
    velocity: Axis2,
}

/// A pair of values, one per axis.
type Axis2 = (f64, f64);

/// The previous frame's luma at full and coarse size.
#[derive(Debug)]
struct Reference {
    full: Plane,
    coarse: Plane,
}

#[derive(Debug, Clone)]
struct Plane {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
}

impl Stabilizer {
    /// A stabiliser averaging the camera's path over about `smoothing_radius` frames: more
    /// is steadier but follows deliberate pans more slowly.
    pub fn new(smoothing_radius: u32) -> Self {
        let level_gain = 2.0 / (f64::from(smoothing_radius.max(1)) + 1.0);
        Stabilizer {
            level_gain,
            trend_gain: level_gain / 2.0,
            previous: None,
            path: (0.0, 0.0),
            intended: (0.0, 0.0),
            velocity: (0.0, 0.0),
        }
    }

    /// Steadies one frame.
    pub fn apply(&mut self, mut frame: I420Frame) -> I420Frame {
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let full = Plane { pixels: frame.planes().0.to_vec(), width, height };
        let coarse = full.shrunk(COARSE_SCALE);
        let shift = match &self.previous {
            Some(previous) if previous.full.width == width && previous.full.height == height => {
                estimate_shift(previous, &full, &coarse)
            }
            _ => None,
        };
        self.previous = Some(Reference { full, coarse });
        let Some((dx, dy)) = shift else {
            // First frame, new size, or a cut: a new path starts here.
            self.path = (0.0, 0.0);
            self.intended = (0.0, 0.0);
            self.velocity = (0.0, 0.0);
            return frame;
        };
        self.path = (self.path.0 + f64::from(dx), self.path.1 + f64::from(dy));
        let (x, vx) = self.smooth(self.path.0, self.intended.0, self.velocity.0);
        let (y, vy) = self.smooth(self.path.1, self.intended.1, self.velocity.1);
        (self.intended, self.velocity) = ((x, y), (vx, vy));
        let limit = |side: usize| (side as f64 * MAX_CORRECTION_FRACTION).floor();
        let correction_x = (self.intended.0 - self.path.0).clamp(-limit(width), limit(width));
        let correction_y = (self.intended.1 - self.path.1).clamp(-limit(height), limit(height));
        // A correction at its limit drags the intended path along, so it cannot wander off.
        self.intended = (self.path.0 + correction_x, self.path.1 + correction_y);
        let (cx, cy) = (correction_x.round() as i32, correction_y.round() as i32);
        if (cx, cy) != (0, 0) {
            let (chroma_width, chroma_height) = (frame.chroma_width() as usize, frame.chroma_height() as usize);
            let (y, u, v) = frame.planes_mut();
            shift_plane(y, width, height, cx, cy, 16);
            shift_plane(u, chroma_width, chroma_height, cx / 2, cy / 2, 128);
            shift_plane(v, chroma_width, chroma_height, cx / 2, cy / 2, 128);
        }
        frame
    }

    /// One step of Holt's smoothing on one axis: the new intended position and velocity.
    fn smooth(&self, position: f64, intended: f64, velocity: f64) -> (f64, f64) {
        let predicted = intended + velocity;
        let next = predicted + self.level_gain * (position - predicted);
        (next, velocity + self.trend_gain * (next - intended - velocity))
    }
}

impl Plane {
    /// A copy `scale` times smaller on each side, each pixel the mean of its block.
    fn shrunk(&self, scale: usize) -> Plane {
        let (width, height) = (self.width / scale, self.height / scale);
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let sum: u32 = (0..scale)
                    .flat_map(|row| {
                        let start = (y * scale + row) * self.width + x * scale;
                        &self.pixels[start..start + scale]
                    })
                    .map(|&p| u32::from(p))
                    .sum();
                pixels.push((sum / (scale * scale) as u32) as u8);
            }
        }
        Plane { pixels, width, height }
    }

    /// The mean absolute difference between `self` moved by `(dx, dy)` and `other`, over
    /// the part both cover, away from the edges by `margin`, on a lattice of one pixel in
    /// `step` each way. The lattice is staggered (row `k` is `k % step` further down and
    /// `(k / step) % step` further along) so that it samples every phase: a regular texture
    /// cannot match at a wrong shift. `None` when nothing is left to compare.
    fn difference(&self, other: &Plane, (dx, dy): (i32, i32), margin: usize, step: usize) -> Option<f64> {
        let (mut total, mut count) = (0u64, 0u64);
        let rows = (margin..other.height.saturating_sub(margin)).step_by(step).enumerate();
        for (k, y) in rows.map(|(k, y)| (k, y + k % step)).filter(|&(_, y)| y + margin < other.height) {
            let Some(source_y) = y.checked_add_signed(-dy as isize).filter(|&sy| sy < self.height) else {
                continue;
            };
            for x in (margin + (k / step) % step..other.width.saturating_sub(margin)).step_by(step) {
                if let Some(source_x) = x.checked_add_signed(-dx as isize).filter(|&sx| sx < self.width) {
                    let a = self.pixels[source_y * self.width + source_x];
                    total += u64::from(a.abs_diff(other.pixels[y * other.width + x]));
                    count += 1;
                }
            }
        }
        (count > 0).then(|| total as f64 / count as f64)
    }
}

/// How far the picture moved from `previous` to `current`, or `None` for a cut (or a
/// picture too small to search).
fn estimate_shift(previous: &Reference, current: &Plane, current_coarse: &Plane) -> Option<(i32, i32)> {
    let coarse_margin = COARSE_RANGE as usize;
    let coarse = best_match(&previous.coarse, current_coarse, COARSE_RANGE, (0, 0), coarse_margin, 1)?;
    let guess = (coarse.0.0 * COARSE_SCALE as i32, coarse.0.1 * COARSE_SCALE as i32);
    let fine_margin = coarse_margin * COARSE_SCALE + FINE_RANGE as usize;
    let ((dx, dy), difference) = best_match(&previous.full, current, FINE_RANGE, guess, fine_margin, FINE_STEP)?;
    (difference <= CUT_THRESHOLD).then_some((dx, dy))
}

/// The shift within `range` of `around` that makes `previous` look most like `current`,
/// with its mean difference.
fn best_match(
    previous: &Plane,
    current: &Plane,
    range: i32,
    around: (i32, i32),
    margin: usize,
    step: usize,
) -> Option<((i32, i32), f64)> {
    let mut best: Option<((i32, i32), f64)> = None;
    for dy in around.1 - range..=around.1 + range {
        for dx in around.0 - range..=around.0 + range {
            let Some(difference) = previous.difference(current, (dx, dy), margin, step) else {
                continue;
            };
            // Ties go to the smaller shift, so a flat picture stays put.
            let size = dx.abs() + dy.abs();
            let better =
                best.is_none_or(|((bx, by), bd)| difference < bd || (difference == bd && size < bx.abs() + by.abs()));
            if better {
                best = Some(((dx, dy), difference));
            }
        }
    }
    best
}

/// Moves a plane's content by `(dx, dy)`, filling what it uncovers with `fill`.
fn shift_plane(plane: &mut [u8], width: usize, height: usize, dx: i32, dy: i32, fill: u8) {
    let source = plane.to_vec();
    for y in 0..height {
        let row = &mut plane[y * width..(y + 1) * width];
        let Some(source_y) = y.checked_add_signed(-dy as isize).filter(|&sy| sy < height) else {
            row.fill(fill);
            continue;
        };
        let source_row = &source[source_y * width..(source_y + 1) * width];
        let shift = dx.unsigned_abs() as usize;
        if shift >= width {
            row.fill(fill);
        } else if dx >= 0 {
            row[..shift].fill(fill);
            row[shift..].copy_from_slice(&source_row[..width - shift]);
        } else {
            row[..width - shift].copy_from_slice(&source_row[shift..]);
            row[width - shift..].fill(fill);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::frame::{Frame, PixelFormat};

    /// A fixed pseudo-random sequence, so the tests are repeatable.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }

    /// A scene of 3x3 blocks of random greys (fine detail, as a real scene has), larger
    /// than the frames cut from it.
    fn scene(width: usize, height: usize, seed: u64) -> Plane {
        let mut random = Lcg(seed);
        let columns = width.div_ceil(3);
        let blocks: Vec<u8> = (0..columns * height.div_ceil(3)).map(|_| 16 + (random.next() % 220) as u8).collect();
        let blocks = &blocks;
        let pixels = (0..height).flat_map(|y| (0..width).map(move |x| blocks[(y / 3) * columns + x / 3])).collect();
        Plane { pixels, width, height }
    }

    /// A `width x height` grey frame cut from `scene` with its top-left corner at `(x, y)`.
    fn view(scene: &Plane, x: usize, y: usize, width: u32, height: u32) -> I420Frame {
        let luma: Vec<u8> = (0..height as usize)
            .flat_map(|row| &scene.pixels[(y + row) * scene.width + x..][..width as usize])
            .copied()
            .collect();
        let chroma = vec![128u8; 2 * (width.div_ceil(2) * height.div_ceil(2)) as usize];
        Frame::new(width, height, PixelFormat::I420, [luma, chroma].concat())
            .unwrap()
            .with_capture_time(Instant::now())
            .into_i420()
    }

    /// How far the content moved between two frames, found by brute force at full size.
    fn measured_shift(a: &I420Frame, b: &I420Frame) -> (i32, i32) {
        let plane = |f: &I420Frame| Plane {
            pixels: f.planes().0.to_vec(),
            width: f.width() as usize,
            height: f.height() as usize,
        };
        best_match(&plane(a), &plane(b), 24, (0, 0), 40, 2).unwrap().0
    }

    #[test]
    fn a_shaking_camera_comes_out_steady() {
        let scene = scene(400, 300, 7);
        let mut random = Lcg(11);
        let mut stabilizer = Stabilizer::new(DEFAULT_SMOOTHING_RADIUS);
        let (mut shaken, mut steadied) = (Vec::new(), Vec::new());
        for _ in 0..60 {
            // The camera shakes up to 10 pixels either way around (40, 30).
            let (x, y) = (30 + random.next() as usize % 21, 20 + random.next() as usize % 21);
            let frame = view(&scene, x, y, 320, 240);
            shaken.push(frame.clone());
            steadied.push(stabilizer.apply(frame));
        }
        let mean_motion = |frames: &[I420Frame]| {
            let shifts: Vec<(i32, i32)> = frames.windows(2).map(|pair| measured_shift(&pair[0], &pair[1])).collect();
            shifts.iter().map(|(dx, dy)| f64::from(dx.abs() + dy.abs())).sum::<f64>() / shifts.len() as f64
        };
        let (before, after) = (mean_motion(&shaken[10..]), mean_motion(&steadied[10..]));
        assert!(before > 8.0, "the input shakes: {before:.2} pixels per frame");
        assert!(after < 1.5, "the output is steady: {after:.2} pixels per frame (input {before:.2})");
    }

    #[test]
    fn a_steady_pan_is_followed_not_fought() {
        let scene = scene(480, 300, 5);
        let mut stabilizer = Stabilizer::new(DEFAULT_SMOOTHING_RADIUS);
        let frames: Vec<I420Frame> = (0..130).map(|k| stabilizer.apply(view(&scene, k, 30, 320, 240))).collect();
        // Once the pan is learnt, each frame moves on by the pan's pixel, and nothing more.
        for pair in frames[100..].windows(2) {
            assert_eq!(measured_shift(&pair[0], &pair[1]), (-1, 0));
        }
    }

    #[test]
    fn a_still_camera_and_a_cut_pass_untouched() {
        let (first, second) = (scene(320, 240, 1), scene(320, 240, 2));
        let mut stabilizer = Stabilizer::new(DEFAULT_SMOOTHING_RADIUS);
        for frame in [view(&first, 0, 0, 320, 240), view(&first, 0, 0, 320, 240), view(&second, 0, 0, 320, 240)] {
            let expected = frame.clone();
            assert_eq!(stabilizer.apply(frame).as_bytes(), expected.as_bytes());
        }
    }

    #[test]
    fn odd_and_tiny_frames_pass_without_panicking() {
        let scene = scene(64, 64, 3);
        let mut stabilizer = Stabilizer::new(5);
        for (x, width, height) in [(0, 33, 17), (3, 33, 17), (1, 5, 3), (0, 5, 3)] {
            let out = stabilizer.apply(view(&scene, x, 0, width, height));
            assert_eq!((out.width(), out.height()), (width, height));
        }
    }
}
