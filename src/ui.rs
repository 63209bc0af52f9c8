//! The bundled web apps, built from `sdk-js/` (`npm run bundle`) and embedded so the broker
//! serves them offline: the chat at `/`, the counter at `/counter`, the board at `/board`.

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every embedded file: the request path it answers, its text and its content type. An app's
/// page is also served at its bare path (`/counter`), so its assets live under that path and
/// the page names them absolutely.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", include_str!("ui/index.html"), HTML),
    ("/index.html", include_str!("ui/index.html"), HTML),
    ("/app.js", include_str!("ui/app.js"), JS),
    ("/app.css", include_str!("ui/app.css"), CSS),
    ("/counter", include_str!("ui/counter/index.html"), HTML),
    ("/counter/", include_str!("ui/counter/index.html"), HTML),
    ("/counter/app.js", include_str!("ui/counter/app.js"), JS),
    ("/counter/app.css", include_str!("ui/counter/app.css"), CSS),
    ("/board", include_str!("ui/board/index.html"), HTML),
    ("/board/", include_str!("ui/board/index.html"), HTML),
    ("/board/app.js", include_str!("ui/board/app.js"), JS),
    ("/board/app.css", include_str!("ui/board/app.css"), CSS),
];

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
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, body, mime)| (body.as_bytes(), *mime))
}
