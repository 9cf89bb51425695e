//! Frame sources: anything that yields raw frames, one after another, from a blocking
//! `read`. A stream's capture thread owns exactly one source.
//!
//! [`SourceSpec`] is what a user writes (`--source`, the `source` option) and knows how to
//! open itself; each kind of source lives in its own module.

use std::fmt;
use std::str::FromStr;

use crate::frame::Frame;

pub mod test_pattern;

pub use test_pattern::{FrameCode, TestPattern};

/// A producer of raw frames, read by a stream's capture thread (vidgear's `custom_stream`
/// contract: `read()` gives the next frame or the end, `stop()` releases the source).
pub trait FrameSource: Send {
    /// Blocks until the next frame is available. `Ok(None)` means the source has ended.
    fn read(&mut self) -> Result<Option<Frame>, SourceError>;

    /// Releases whatever the source holds (devices, child processes). Called once, when the
    /// stream stops; `read` is not called afterwards.
    fn stop(&mut self) {}

    /// The nominal frame rate, if the source knows it.
    fn frame_rate(&self) -> Option<f64> {
        None
    }
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source string names a kind of source this build cannot open.
    #[error("cannot open source {spec:?}: {reason}")]
    Unsupported {
        /// The source as the user wrote it.
        spec: String,
        /// What is missing.
        reason: String,
    },
    /// A frame the source produced is unusable.
    #[error("source produced an unusable frame: {0}")]
    BadFrame(#[from] crate::frame::FrameError),
}

/// What to stream, as a user writes it on the command line or in options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceSpec {
    /// The built-in moving test pattern (`testsrc`), 1280x720 at 30 fps.
    TestPattern,
}

impl SourceSpec {
    /// Opens the source for reading.
    pub fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        match self {
            SourceSpec::TestPattern => Ok(Box::new(TestPattern::default())),
        }
    }
}

impl FromStr for SourceSpec {
    type Err = SourceError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        match source.trim() {
            "testsrc" | "test-pattern" | "testpattern" => Ok(SourceSpec::TestPattern),
            other => Err(SourceError::Unsupported {
                spec: other.to_owned(),
                reason: "only the built-in test pattern (\"testsrc\") is available in this \
                         version; cameras, files and network streams are not yet supported"
                    .to_owned(),
            }),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::TestPattern => f.write_str("testsrc"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_test_pattern_and_names_what_it_cannot_open() {
        assert_eq!("testsrc".parse::<SourceSpec>().unwrap(), SourceSpec::TestPattern);
        let err = "video.mp4".parse::<SourceSpec>().unwrap_err().to_string();
        assert!(err.contains("\"video.mp4\""), "{err}");
    }
}
