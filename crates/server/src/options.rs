//! WebGear_RTC's options, by their vidgear names, read from a map (the CLI's `--options`,
//! a config file, or a library user's JSON). As in vidgear, an invalid value of a known
//! option is skipped with a warning that names the option and the value; so is an unknown
//! option.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::warn;
use webgear_media::transform::MAX_FRAME_SIZE_REDUCTION;
use webgear_media::transform::stabilize::DEFAULT_SMOOTHING_RADIUS;

/// The options a server is built with, under WebGear_RTC's names and defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Shrink frames by this percentage (0..=90) before encoding. Default 20.
    pub frame_size_reduction: u8,
    /// Debug logging for this library; error pages show a readable error report instead of
    /// `500.html`. Default false.
    pub logging: bool,
    /// When the source ends or fails, keep streaming a blank "No Input" frame instead of
    /// ending. Default false; always on with `enable_live_broadcast`.
    pub enable_infinite_frames: bool,
    /// A live broadcast: viewers come and go, the stream never ends, and
    /// `/close_connection` answers `DISABLED`. Every viewer always receives the full
    /// stream, broadcast or not. Default false.
    pub enable_live_broadcast: bool,
    /// The folder whose `.vidgear/webgear_rtc` holds the templates and static files
    /// (default: the home directory). It must exist and be writable.
    pub custom_data_location: Option<PathBuf>,
    /// Rewrite the default data files even if they exist. Default false.
    pub overwrite_default_files: bool,
    /// Ask the source for frames of this size (`[640, 480]` or `"640x480"`).
    pub resolution: Option<(u32, u32)>,
    /// Ask the source for this many frames per second.
    pub framerate: Option<f64>,
    /// An OpenCV-style colour conversion; conversions to gray (`COLOR_BGR2GRAY`) are
    /// supported.
    pub colorspace: Option<String>,
    /// Wait this long before reading the source, as vidgear's `time_delay` (seconds).
    pub time_delay: Duration,
    /// Take the shake out of the video (vidgear's `stabilize`). Default false.
    pub stabilize: bool,
    /// How many frames stabilisation averages the camera's path over (vidgear's
    /// `SMOOTHING_RADIUS`, default 25): more is steadier, but follows pans more slowly.
    pub smoothing_radius: u32,
    /// The most viewers held at once (connected or connecting); further offers get
    /// `503 Service Unavailable`. Default 1000. Not a vidgear option.
    pub max_viewers: usize,
    /// Serve Prometheus metrics at `/metrics`. Default true. Not a vidgear option.
    pub enable_metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frame_size_reduction: 20,
            logging: false,
            enable_infinite_frames: false,
            enable_live_broadcast: false,
            custom_data_location: None,
            overwrite_default_files: false,
            resolution: None,
            framerate: None,
            colorspace: None,
            time_delay: Duration::ZERO,
            stabilize: false,
            smoothing_radius: DEFAULT_SMOOTHING_RADIUS,
            max_viewers: 1000,
            enable_metrics: true,
        }
    }
}

/// The largest side `resolution` accepts (8K).
const MAX_SIDE: u64 = 7680;

impl Options {
    /// Whether the stream continues with blank frames after the source ends: asked for
    /// directly, or implied by a live broadcast.
    pub fn infinite_frames(&self) -> bool {
        self.enable_infinite_frames || self.enable_live_broadcast
    }

    /// Whether `colorspace` asks for grayscale frames.
    pub fn grayscale(&self) -> bool {
        self.colorspace.as_deref().is_some_and(is_gray_conversion)
    }

    /// Applies every valid entry of `map` and returns a warning for each entry skipped.
    /// Each warning is also logged.
    pub fn apply_map(&mut self, map: &Map<String, Value>) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, value) in map {
            if let Err(warning) = self.apply(name, value) {
                warn!("{warning}");
                warnings.push(warning);
            }
        }
        warnings
    }

    fn apply(&mut self, name: &str, value: &Value) -> Result<(), String> {
        let invalid = |expected: &str| format!("skipped invalid value {value} of option `{name}`: expected {expected}");
        let flag = |target: &mut bool| value.as_bool().map(|v| *target = v).ok_or_else(|| invalid("true or false"));
        match name.trim().to_ascii_lowercase().as_str() {
            "frame_size_reduction" => match value.as_u64() {
                Some(percent) if percent <= u64::from(MAX_FRAME_SIZE_REDUCTION) => {
                    self.frame_size_reduction = percent as u8;
                    Ok(())
                }
                _ => Err(invalid(&format!("a whole number of percent from 0 to {MAX_FRAME_SIZE_REDUCTION}"))),
            },
            "logging" => flag(&mut self.logging),
            "enable_infinite_frames" => flag(&mut self.enable_infinite_frames),
            "enable_live_broadcast" => flag(&mut self.enable_live_broadcast),
            "overwrite_default_files" => flag(&mut self.overwrite_default_files),
            "stabilize" => flag(&mut self.stabilize),
            "enable_metrics" => flag(&mut self.enable_metrics),
            "max_viewers" => match value.as_u64() {
                Some(viewers) if viewers >= 1 => {
                    self.max_viewers = usize::try_from(viewers).unwrap_or(usize::MAX);
                    Ok(())
                }
                _ => Err(invalid("a whole number of viewers, at least 1")),
            },
            "smoothing_radius" => match value.as_u64() {
                Some(frames) if (1..=1000).contains(&frames) => {
                    self.smoothing_radius = frames as u32;
                    Ok(())
                }
                _ => Err(invalid("a whole number of frames from 1 to 1000")),
            },
            "custom_data_location" => match value.as_str() {
                Some(path) if !path.trim().is_empty() => {
                    self.custom_data_location = Some(PathBuf::from(path));
                    Ok(())
                }
                _ => Err(invalid("the path of an existing, writable directory")),
            },
            "resolution" => {
                let sides = match value {
                    Value::Array(pair) if pair.len() == 2 => pair[0].as_u64().zip(pair[1].as_u64()),
                    Value::String(text) => text
                        .split_once(['x', 'X'])
                        .and_then(|(w, h)| w.trim().parse::<u64>().ok().zip(h.trim().parse::<u64>().ok())),
                    _ => None,
                };
                match sides {
                    Some((w, h)) if (16..=MAX_SIDE).contains(&w) && (16..=MAX_SIDE).contains(&h) => {
                        self.resolution = Some((w as u32, h as u32));
                        Ok(())
                    }
                    _ => Err(invalid(&format!("[width, height] or \"WIDTHxHEIGHT\", each from 16 to {MAX_SIDE}"))),
                }
            }
            "framerate" => match value.as_f64() {
                Some(rate) if (1.0..=240.0).contains(&rate) => {
                    self.framerate = Some(rate);
                    Ok(())
                }
                _ => Err(invalid("frames per second from 1 to 240")),
            },
            "time_delay" => match value.as_f64() {
                Some(seconds) if (0.0..=3600.0).contains(&seconds) => {
                    self.time_delay = Duration::from_secs_f64(seconds);
                    Ok(())
                }
                _ => Err(invalid("seconds from 0 to 3600")),
            },
            "colorspace" => match value.as_str() {
                Some(conversion) if is_gray_conversion(conversion) => {
                    self.colorspace = Some(conversion.to_owned());
                    Ok(())
                }
                _ => Err(invalid("a conversion to gray such as \"COLOR_BGR2GRAY\" (the only kind supported)")),
            },
            "custom_stream" => {
                Err(format!("skipped option `{name}`: a custom stream is given in code (Builder::custom_stream)"))
            }
            _ => Err(format!("skipped unknown option `{name}`")),
        }
    }
}

/// `COLOR_BGR2GRAY`, `COLOR_RGB2GRAY`, `COLOR_BGRA2GRAY`, … (case-insensitive).
fn is_gray_conversion(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    upper.starts_with("COLOR_") && upper.ends_with("2GRAY")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(value: Value) -> (Options, Vec<String>) {
        let mut options = Options::default();
        let warnings = options.apply_map(value.as_object().unwrap());
        (options, warnings)
    }

    #[test]
    fn defaults_match_webgear_rtc() {
        let options = Options::default();
        assert_eq!(options.frame_size_reduction, 20);
        assert!(!options.logging && !options.enable_infinite_frames && !options.enable_live_broadcast);
        assert!(!options.overwrite_default_files && options.custom_data_location.is_none());
    }

    #[test]
    fn valid_values_apply() {
        let (options, warnings) = apply(json!({
            "frame_size_reduction": 0,
            "logging": true,
            "enable_infinite_frames": true,
            "enable_live_broadcast": true,
            "custom_data_location": "/srv/site",
            "overwrite_default_files": true,
            "resolution": [640, 480],
            "framerate": 29.97,
            "colorspace": "COLOR_BGR2GRAY",
            "time_delay": 1.5,
            "stabilize": true,
            "SMOOTHING_RADIUS": 10,
            "max_viewers": 5,
            "enable_metrics": false,
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(options.resolution, Some((640, 480)));
        assert_eq!(options.framerate, Some(29.97));
        assert!(options.grayscale());
        assert_eq!(options.time_delay, Duration::from_millis(1500));
        assert!(options.stabilize && !options.enable_metrics);
        assert_eq!(options.max_viewers, 5);
        assert_eq!(options.smoothing_radius, 10, "vidgear's upper-case stabiliser option names work");
        let (string_form, _) = apply(json!({"resolution": "1280x720"}));
        assert_eq!(string_form.resolution, Some((1280, 720)));
        assert_eq!(options.frame_size_reduction, 0);
        assert!(options.logging && options.enable_infinite_frames && options.enable_live_broadcast);
        assert!(options.overwrite_default_files);
        assert_eq!(options.custom_data_location, Some(PathBuf::from("/srv/site")));
    }

    #[test]
    fn live_broadcast_forces_infinite_frames() {
        let (options, _) = apply(json!({"enable_live_broadcast": true, "enable_infinite_frames": false}));
        assert!(options.infinite_frames());
        assert!(!Options::default().infinite_frames());
    }

    #[test]
    fn invalid_and_unknown_values_are_skipped_with_a_warning_naming_them() {
        let (options, warnings) = apply(json!({
            "frame_size_reduction": 95,
            "logging": "yes",
            "enable_live_broadcast": 1,
            "custom_data_location": 7,
            "bogus": 1,
            "stabilize": "on",
            "smoothing_radius": 0,
            "max_viewers": 0,
            "resolution": [10, 20, 30],
            "framerate": 0,
            "time_delay": -1,
            "colorspace": "COLOR_BGR2HSV",
        }));
        assert_eq!(options, Options::default());
        assert_eq!(warnings.len(), 12, "{warnings:?}");
        for (needle, name) in [
            ("95", "`frame_size_reduction`"),
            ("\"yes\"", "`logging`"),
            ("value 1", "`enable_live_broadcast`"),
            ("value 7", "`custom_data_location`"),
            ("unknown", "`bogus`"),
            ("\"on\"", "`stabilize`"),
            ("value 0", "`smoothing_radius`"),
            ("value 0", "`max_viewers`"),
            ("[10,20,30]", "`resolution`"),
            ("value 0", "`framerate`"),
            ("value -1", "`time_delay`"),
            ("COLOR_BGR2HSV", "`colorspace`"),
        ] {
            assert!(warnings.iter().any(|w| w.contains(needle) && w.contains(name)), "{name}: {warnings:?}");
        }
    }
}
