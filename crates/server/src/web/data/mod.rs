//! The data files: templates and static assets, kept in a folder users can customise,
//! exactly where and as WebGear_RTC keeps them (`~/.vidgear/webgear_rtc` by default), so a
//! vidgear user's customised site keeps working.
//!
//! The default files are embedded in the binary: generating them never needs a network.
//! They are written when one of the three critical templates (`index.html`, `404.html`,
//! `500.html`) is missing, or when `overwrite_default_files` asks for it; no other file or
//! folder is ever touched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, info};

/// The default files, by their path inside the data folder.
const DEFAULT_FILES: &[(&str, &[u8])] = &[
    ("templates/base.html", include_bytes!("default/templates/base.html")),
    ("templates/index.html", include_bytes!("default/templates/index.html")),
    ("templates/404.html", include_bytes!("default/templates/404.html")),
    ("templates/500.html", include_bytes!("default/templates/500.html")),
    ("static/css/webgear.css", include_bytes!("default/static/css/webgear.css")),
    ("static/js/webgear.js", include_bytes!("default/static/js/webgear.js")),
    ("static/img/favicon.svg", include_bytes!("default/static/img/favicon.svg")),
];

/// Templates whose absence triggers generation.
const CRITICAL_TEMPLATES: [&str; 3] = ["index.html", "404.html", "500.html"];

/// Folders the layout always has.
const FOLDERS: [&str; 4] = ["templates", "static/js", "static/css", "static/img"];

/// Why the data folder could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// No home directory to put the default location in.
    #[error("no home directory for the default data location; set custom_data_location")]
    NoHome,
    /// `custom_data_location` is not an existing directory.
    #[error("custom_data_location {0:?} is not an existing directory")]
    NotADirectory(PathBuf),
    /// The data folder cannot be created or written.
    #[error("data location {path:?} is not writable: {source}")]
    NotWritable {
        /// The folder or file that could not be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A prepared data folder.
#[derive(Debug, Clone)]
pub(crate) struct DataFiles {
    root: PathBuf,
}

impl DataFiles {
    /// Chooses the folder (`<home>/.vidgear/webgear_rtc`, or inside `custom_location`),
    /// creates its layout, and writes the default files if needed or asked to.
    pub(crate) fn prepare(custom_location: Option<&Path>, overwrite: bool) -> Result<DataFiles, DataError> {
        let parent = match custom_location {
            Some(custom) if custom.is_dir() => custom.to_path_buf(),
            Some(custom) => return Err(DataError::NotADirectory(custom.to_path_buf())),
            None => std::env::home_dir().filter(|home| !home.as_os_str().is_empty()).ok_or(DataError::NoHome)?,
        };
        // A location that already is a `.vidgear` folder is not nested in another one.
        let vidgear =
            if parent.file_name().is_some_and(|name| name == ".vidgear") { parent } else { parent.join(".vidgear") };
        let data = DataFiles { root: vidgear.join("webgear_rtc") };
        info!(location = %data.root.display(), "data files location");

        for folder in FOLDERS {
            let path = data.root.join(folder);
            fs::create_dir_all(&path).map_err(|source| DataError::NotWritable { path, source })?;
        }
        let missing: Vec<&str> =
            CRITICAL_TEMPLATES.into_iter().filter(|name| !data.templates_dir().join(name).is_file()).collect();
        if overwrite || !missing.is_empty() {
            if missing.is_empty() {
                info!("overwrite_default_files: writing the default data files");
            } else {
                info!(missing = ?missing, "critical templates missing: writing the default data files");
            }
            data.write_defaults()?;
        }
        Ok(data)
    }

    fn write_defaults(&self) -> Result<(), DataError> {
        for (relative, contents) in DEFAULT_FILES {
            let path = self.root.join(relative);
            fs::write(&path, contents).map_err(|source| DataError::NotWritable { path: path.clone(), source })?;
            debug!(file = %path.display(), "generated");
        }
        Ok(())
    }

    /// The folder itself (`…/.vidgear/webgear_rtc`).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the templates live.
    pub(crate) fn templates_dir(&self) -> PathBuf {
        self.root.join("templates")
    }

    /// What `/static` serves.
    pub(crate) fn static_dir(&self) -> PathBuf {
        self.root.join("static")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("webgear-data-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn generates_the_layout_and_default_files_in_a_custom_location() {
        let parent = scratch("fresh");
        let data = DataFiles::prepare(Some(&parent), false).unwrap();
        assert_eq!(data.root(), parent.join(".vidgear/webgear_rtc"));
        for folder in FOLDERS {
            assert!(data.root().join(folder).is_dir(), "{folder}");
        }
        for (relative, contents) in DEFAULT_FILES {
            assert_eq!(fs::read(data.root().join(relative)).unwrap(), *contents, "{relative}");
        }
    }

    #[test]
    fn a_location_ending_in_dot_vidgear_is_not_doubled() {
        let parent = scratch("dotted").join(".vidgear");
        fs::create_dir_all(&parent).unwrap();
        let data = DataFiles::prepare(Some(&parent), false).unwrap();
        assert_eq!(data.root(), parent.join("webgear_rtc"));
    }

    #[test]
    fn customised_files_survive_until_a_critical_file_goes_missing_or_overwrite_is_asked() {
        let parent = scratch("custom");
        let data = DataFiles::prepare(Some(&parent), false).unwrap();
        let index = data.templates_dir().join("index.html");
        let own = data.templates_dir().join("mine.html");
        let own_static = data.static_dir().join("css/mine.css");
        fs::write(&index, "customised").unwrap();
        fs::write(&own, "mine").unwrap();
        fs::write(&own_static, "body{}").unwrap();

        DataFiles::prepare(Some(&parent), false).unwrap();
        assert_eq!(fs::read_to_string(&index).unwrap(), "customised", "all critical files present: untouched");

        fs::remove_file(data.templates_dir().join("404.html")).unwrap();
        DataFiles::prepare(Some(&parent), false).unwrap();
        assert!(data.templates_dir().join("404.html").is_file(), "the missing file is back");
        assert_ne!(fs::read_to_string(&index).unwrap(), "customised", "the defaults were written");

        fs::write(&index, "customised again").unwrap();
        DataFiles::prepare(Some(&parent), true).unwrap();
        assert_ne!(fs::read_to_string(&index).unwrap(), "customised again", "overwrite rewrites defaults");
        assert_eq!(fs::read_to_string(&own).unwrap(), "mine", "other files are never touched");
        assert_eq!(fs::read_to_string(&own_static).unwrap(), "body{}");
    }

    #[test]
    fn a_missing_or_unwritable_location_is_a_clear_error() {
        let missing = scratch("gone").join("does-not-exist");
        let error = DataFiles::prepare(Some(&missing), false).unwrap_err();
        assert!(error.to_string().contains("is not an existing directory"), "{error}");

        let file = scratch("file").join("plain-file");
        fs::write(&file, "x").unwrap();
        assert!(matches!(DataFiles::prepare(Some(&file), false), Err(DataError::NotADirectory(_))));

        // Not even root can create folders in /proc.
        #[cfg(target_os = "linux")]
        {
            let error = DataFiles::prepare(Some(Path::new("/proc")), false).unwrap_err();
            assert!(matches!(error, DataError::NotWritable { .. }), "{error}");
            assert!(error.to_string().contains("not writable"), "{error}");
        }
    }
}
