//! Jinja2 templates, rendered with minijinja from the data folder's `templates/`, so
//! WebGear_RTC templates render unchanged: `{% extends %}`, blocks, includes, and
//! `url_for('static', path='/css/custom.css')`.
//!
//! Every template sees `url_prefix`: the path the app is mounted under (empty at the root),
//! which `url_for` puts in front of every URL so pages work when the app is nested; and
//! `rtc_configuration`: the JSON the page's player gives `new RTCPeerConnection(...)` (the
//! ICE servers and transport policy from the options).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, State, path_loader};

use crate::ice::IceConfig;

/// The template environment of one app.
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    env: Arc<Environment<'static>>,
    /// Rendered fresh for each page, as TURN credentials may be minted per viewer.
    ice: Arc<IceConfig>,
}

impl Templates {
    /// Templates from `dir`; `url_for(name, path=...)` knows the folders in `mounts`
    /// (name → URL path, e.g. `static` → `/static`); pages get their ICE settings from
    /// `ice`.
    pub(crate) fn new(dir: PathBuf, mounts: BTreeMap<String, String>, ice: Arc<IceConfig>) -> Templates {
        let mut env = Environment::new();
        env.set_loader(path_loader(dir));
        env.add_function("url_for", move |state: &State, name: &str, kwargs: Kwargs| {
            url_for(state, &mounts, name, &kwargs)
        });
        Templates { env: Arc::new(env), ice }
    }

    /// Renders template `name` with `context`, adding `url_prefix`.
    pub(crate) fn render(&self, name: &str, url_prefix: &str, context: Value) -> Result<String, Error> {
        let template = self.env.get_template(name)?;
        let url_prefix = Value::from_safe_string(escape_html(url_prefix));
        let rtc_configuration = self.ice.rtc_configuration(SystemTime::now()).to_string();
        template
            .render(minijinja::context! { url_prefix => url_prefix, rtc_configuration => rtc_configuration, ..context })
    }
}

/// `url_for(name, path=...)`: the URL of a file in a named folder. The result is marked
/// safe (HTML-escaping would turn every `/` into `&#x2f;`), so the characters that matter
/// in HTML are escaped here instead.
fn url_for(state: &State, mounts: &BTreeMap<String, String>, name: &str, kwargs: &Kwargs) -> Result<Value, Error> {
    let path: Option<String> = kwargs.get("path")?;
    kwargs.assert_all_used()?;
    let prefix = state.lookup("url_prefix").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mount = mounts.get(name).ok_or_else(|| {
        let known: Vec<&str> = mounts.keys().map(String::as_str).collect();
        Error::new(ErrorKind::InvalidOperation, format!("url_for: no folder named {name:?} (known: {known:?})"))
    })?;
    let path = path.unwrap_or_default();
    let separator = if path.is_empty() || path.starts_with('/') { "" } else { "/" };
    let url = format!("{prefix}{mount}{separator}{path}");
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Ok(Value::from_safe_string(escaped))
}

/// Escapes the characters that matter in HTML text and attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('\'', "&#39;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates_with(files: &[(&str, &str)]) -> Templates {
        let dir = std::env::temp_dir().join(format!("webgear-templates-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, body) in files {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let mounts = BTreeMap::from([("static".to_owned(), "/static".to_owned())]);
        Templates::new(dir, mounts, Arc::new(IceConfig::from_options(&crate::Options::default()).unwrap()))
    }

    #[test]
    fn url_for_honours_the_prefix_and_names_unknown_folders() {
        let templates = templates_with(&[
            ("a.html", "{{ url_for('static', path='/css/x.css') }}|{{ url_for('static', path='js/y.js') }}"),
            ("b.html", "{{ url_for('nope', path='/x') }}"),
            ("c.html", "<a href=\"{{ url_for('static', path='/a\"b<c>.css') }}\">"),
        ]);
        assert_eq!(
            templates.render("c.html", "", Value::UNDEFINED).unwrap(),
            "<a href=\"/static/a&quot;b&lt;c&gt;.css\">"
        );
        assert_eq!(templates.render("a.html", "", Value::UNDEFINED).unwrap(), "/static/css/x.css|/static/js/y.js");
        assert_eq!(
            templates.render("a.html", "/cam", Value::UNDEFINED).unwrap(),
            "/cam/static/css/x.css|/cam/static/js/y.js"
        );
        let error = templates.render("b.html", "", Value::UNDEFINED).unwrap_err().to_string();
        assert!(error.contains("no folder named \"nope\""), "{error}");
    }
}
