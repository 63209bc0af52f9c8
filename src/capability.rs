//! The capabilities of SPEC.md 9.2 (what a connection may do in a room) and the token claim
//! that grants them: the vocabulary shared by the config, token checks and the permission
//! checks ([`crate::permissions`]).

use serde::{Deserialize, Serialize};

/// One thing a connection may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Capability {
    /// Subscribe (live messages and resume).
    #[serde(rename = "sub")]
    Sub,
    /// Publish messages.
    #[serde(rename = "pub")]
    Pub,
    /// Read the history (`hist`).
    #[serde(rename = "hist")]
    Hist,
    /// Read state (`get`, `list`, a subscription's state snapshot and changes).
    #[serde(rename = "state.read")]
    StateRead,
    /// Write state (`set`, `del`, `incr`, `cas`).
    #[serde(rename = "state.write")]
    StateWrite,
    /// Appear in and see the room's presence.
    #[serde(rename = "presence")]
    Presence,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::Sub,
        Capability::Pub,
        Capability::Hist,
        Capability::StateRead,
        Capability::StateWrite,
        Capability::Presence,
    ];

    /// The name in tokens and config.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::Sub => "sub",
            Capability::Pub => "pub",
            Capability::Hist => "hist",
            Capability::StateRead => "state.read",
            Capability::StateWrite => "state.write",
            Capability::Presence => "presence",
        }
    }
}

/// A set of capabilities, small enough to copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow(u8);

impl Allow {
    pub const NONE: Allow = Allow(0);
    pub const ALL: Allow = Allow(0b11_1111);

    pub fn of(caps: impl IntoIterator<Item = Capability>) -> Allow {
        Allow(caps.into_iter().fold(0, |m, c| m | Allow::bit(c)))
    }

    pub const fn has(self, c: Capability) -> bool {
        self.0 & Allow::bit(c) != 0
    }

    /// The names of the capabilities in this set, in `Capability::ALL` order.
    pub fn names(self) -> Vec<String> {
        Capability::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .map(|c| c.name().to_string())
            .collect()
    }

    /// The first capability of `needed` this set lacks.
    pub fn missing(self, needed: Allow) -> Option<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| needed.has(*c) && !self.has(*c))
    }

    const fn bit(c: Capability) -> u8 {
        1 << (c as u8)
    }
}

impl<'de> Deserialize<'de> for Allow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Allow, D::Error> {
        Ok(Allow::of(Vec::<Capability>::deserialize(d)?))
    }
}

impl Serialize for Allow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = Capability::ALL
            .into_iter()
            .filter(|c| self.has(*c))
            .map(Capability::name)
            .collect();
        names.serialize(s)
    }
}

/// One entry of a token's `rooms` claim: the rooms it matches and what it allows there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// An exact room name, a prefix ending in `*` (`chat:*`), or either with `{sub}` standing
    /// for the token's user id (`inbox:{sub}`).
    #[serde(rename = "match")]
    pub pattern: String,
    pub allow: Allow,
}
