//! The chat web UI, built from `sdk-js/` and embedded so the broker serves it offline.

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// The embedded file for a request path, with its content type.
pub(crate) fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX.as_bytes(), "text/html; charset=utf-8")),
        "/app.js" => Some((APP_JS.as_bytes(), "text/javascript; charset=utf-8")),
        "/app.css" => Some((APP_CSS.as_bytes(), "text/css; charset=utf-8")),
        _ => None,
    }
}
