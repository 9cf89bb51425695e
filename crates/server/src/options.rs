//! WebGear_RTC's options, by their vidgear names, read from a map (the CLI's `--options`,
//! a config file, or a library user's JSON). As in vidgear, an invalid value of a known
//! option is skipped with a warning that names it; so is an unknown option.

use serde_json::{Map, Value};
use tracing::warn;
use webgear_media::transform::MAX_FRAME_SIZE_REDUCTION;

/// The options a stream is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Shrink frames by this percentage (0..=90) before encoding. Default 20.
    pub frame_size_reduction: u8,
    /// Debug logging for this library. Default false.
    pub logging: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frame_size_reduction: 20,
            logging: false,
        }
    }
}

/// Options vidgear defines that this version accepts by name but does not act on yet.
const NOT_YET_SUPPORTED: &[&str] = &[
    "enable_infinite_frames",
    "enable_live_broadcast",
    "custom_data_location",
    "overwrite_default_files",
    "custom_stream",
    "resolution",
    "framerate",
    "colorspace",
    "time_delay",
    "stabilize",
];

impl Options {
    /// Applies every valid entry of `map` and returns a warning for each entry skipped.
    /// Each warning is also logged.
    pub fn apply_map(&mut self, map: &Map<String, Value>) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, value) in map {
            let skipped = match name.trim().to_ascii_lowercase().as_str() {
                "frame_size_reduction" => match value.as_u64() {
                    Some(percent) if percent <= u64::from(MAX_FRAME_SIZE_REDUCTION) => {
                        self.frame_size_reduction = percent as u8;
                        None
                    }
                    _ => Some(format!(
                        "skipped invalid value {value} of option `{name}`: expected a whole \
                         number of percent from 0 to {MAX_FRAME_SIZE_REDUCTION}"
                    )),
                },
                "logging" => match value.as_bool() {
                    Some(enabled) => {
                        self.logging = enabled;
                        None
                    }
                    None => Some(format!(
                        "skipped invalid value {value} of option `{name}`: expected true or false"
                    )),
                },
                known if NOT_YET_SUPPORTED.contains(&known) => Some(format!(
                    "option `{name}` is not supported by this version yet; ignored"
                )),
                _ => Some(format!("skipped unknown option `{name}`")),
            };
            if let Some(warning) = skipped {
                warn!("{warning}");
                warnings.push(warning);
            }
        }
        warnings
    }
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
    fn valid_values_apply() {
        let (options, warnings) = apply(json!({"frame_size_reduction": 50, "logging": true}));
        assert_eq!(
            options,
            Options {
                frame_size_reduction: 50,
                logging: true
            }
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn invalid_and_unknown_values_are_skipped_with_a_warning_naming_them() {
        let (options, warnings) = apply(
            json!({"frame_size_reduction": 95, "logging": "yes", "bogus": 1, "time_delay": 2}),
        );
        assert_eq!(options, Options::default());
        assert_eq!(warnings.len(), 4);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("95") && w.contains("`frame_size_reduction`"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("\"yes\"") && w.contains("`logging`"))
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("unknown option `bogus`"))
        );
        assert!(warnings.iter().any(|w| w.contains("`time_delay`")));
    }
}
