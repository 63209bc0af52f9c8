//! The board app at `/board` (sticky notes in room state, live cursors over ephemeral signals),
//! built from `sdk-js/board/` by `npm run bundle` and embedded like the chat.

const INDEX: &str = include_str!("board/index.html");
const BOARD_JS: &str = include_str!("board/board.js");
const BOARD_CSS: &str = include_str!("board/board.css");

/// The embedded file for a request path under `/board`, with its content type.
pub(crate) fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "/board" | "/board/" | "/board/index.html" => {
            Some((INDEX.as_bytes(), "text/html; charset=utf-8"))
        }
        "/board/board.js" => Some((BOARD_JS.as_bytes(), "text/javascript; charset=utf-8")),
        "/board/board.css" => Some((BOARD_CSS.as_bytes(), "text/css; charset=utf-8")),
        _ => None,
    }
}
