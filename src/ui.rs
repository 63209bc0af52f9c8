//! The chat web UI, built from `sdk-js/` and embedded so the broker serves it offline; the
//! other bundled apps each in a module of their own.

mod board;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// What the chat needs to know before it connects (`/ui.json`): whether the server checks
/// tokens, and where the page gets one.
pub(crate) fn settings(auth: bool, token_url: &str) -> String {
    #[derive(serde::Serialize)]
    struct Settings<'a> {
        auth: bool,
        token_url: &'a str,
    }
    serde_json::to_string(&Settings { auth, token_url }).unwrap_or_else(|_| "{}".into())
}

/// The embedded file for a request path, with its content type.
pub(crate) fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX.as_bytes(), "text/html; charset=utf-8")),
        "/app.js" => Some((APP_JS.as_bytes(), "text/javascript; charset=utf-8")),
        "/app.css" => Some((APP_CSS.as_bytes(), "text/css; charset=utf-8")),
        other => board::asset(other),
    }
}
