//! The roomd wire protocol, version 1, as data.
//!
//! - [`frame`]: every frame a client or the server sends, as Rust types.
//! - [`codec`]: MessagePack encoding and decoding of those frames, with the error that decides
//!   the reply code when a client frame cannot be read.
//! - [`codes`]: error codes and WebSocket close codes, with their retry semantics.
//! - [`names`]: the room name grammar.
//! - [`value`]: the subset of MessagePack that state values and presence info may hold.
//!
//! `SPEC.md` beside this crate is the human contract; `vectors/frames.json` pins the bytes.

pub mod codec;
pub mod codes;
pub mod frame;
pub mod names;
pub mod value;

pub use codec::{decode_client, decode_server, encode, DecodeError};
pub use codes::{CloseCode, ErrorCode};
pub use frame::{ClientFrame, Limits, Member, ServerFrame, StateItem};
pub use names::{is_unsafe_id_char, valid_id, validate_room_name, RoomNameError};
pub use value::{check_value, UnsafeValue, MAX_VALUE_DEPTH};

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// The WebSocket subprotocol that selects [`VERSION`].
pub const SUBPROTOCOL: &str = "roomd.v1";

/// A MessagePack value, as carried by state values and presence info.
pub use rmpv::Value;
