//! What a connection may do in a room (SPEC.md 9.2): the first grant of its token's `rooms`
//! claim that matches the room, or, for a token without the claim (and for anonymous
//! connections), the defaults of the room's namespace.
//!
//! Checked when a request names a room (subscribe, publish, a history or state read, a state
//! write, presence), never per delivery: fan-out costs the same with authorization on. A check
//! is a walk over the token's few grants and one map lookup, with no allocation.

use std::sync::Arc;

use crate::capability::{Allow, Capability, Grant};
use crate::config::Config;

/// The permissions of one connection, fixed until it refreshes its token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// The verified user id the `{sub}` templates stand for; `None` for anonymous.
    user: Option<Arc<str>>,
    /// The token's `rooms` claim; `None` when the token has none, or there is no token.
    grants: Option<Arc<[Grant]>>,
}

impl Access {
    /// `user` is the verified user id (not a self-declared name: that grants nothing).
    pub(crate) fn new(user: Option<Arc<str>>, grants: Option<Vec<Grant>>) -> Access {
        Access {
            user,
            grants: grants.map(Arc::from),
        }
    }

    /// What this connection may do in `room`.
    pub(crate) fn allow(&self, config: &Config, room: &str) -> Allow {
        if let Some(grants) = &self.grants {
            let user = self.user.as_deref().unwrap_or("");
            return grants
                .iter()
                .find(|g| matches(&g.pattern, room, user))
                .map_or(Allow::NONE, |g| g.allow);
        }
        let ns = config.namespace(room);
        let p = &config.permissions;
        match (&self.user, ns) {
            (Some(_), Some(ns)) => ns.authenticated.unwrap_or(p.authenticated),
            (Some(_), None) => p.authenticated,
            (None, Some(ns)) => ns.anonymous.unwrap_or(p.anonymous),
            (None, None) => p.anonymous,
        }
    }

    /// Whether this connection may use every capability in `needed` in `room`; the first one
    /// missing otherwise.
    pub(crate) fn check(
        &self,
        config: &Config,
        room: &str,
        needed: Allow,
    ) -> Result<(), Capability> {
        if needed == Allow::NONE {
            return Ok(());
        }
        match self.allow(config, room).missing(needed) {
            Some(c) => Err(c),
            None => Ok(()),
        }
    }
}

/// Whether a grant's pattern matches `room` for `user`: an exact name, or a prefix when it ends
/// in `*`; `{sub}` stands for the user id. The `*` is read from the pattern before `{sub}` is
/// put in, so a user id with a `*` in it matches only itself.
fn matches(pattern: &str, room: &str, user: &str) -> bool {
    let (stem, prefix) = match pattern.strip_suffix('*') {
        Some(stem) => (stem, true),
        None => (pattern, false),
    };
    let mut rest = room;
    let mut parts = stem.split("{sub}");
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(r) = rest.strip_prefix(first) else {
        return false;
    };
    rest = r;
    for part in parts {
        // A template needs a user: anonymous connections match no `{sub}` pattern.
        if user.is_empty() {
            return false;
        }
        let Some(r) = rest.strip_prefix(user).and_then(|r| r.strip_prefix(part)) else {
            return false;
        };
        rest = r;
    }
    prefix || rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(pattern: &str, caps: &[Capability]) -> Grant {
        Grant {
            pattern: pattern.into(),
            allow: Allow::of(caps.iter().copied()),
        }
    }

    #[test]
    fn patterns_match_exact_prefix_and_template() {
        assert!(matches("lobby", "lobby", "ada"));
        assert!(!matches("lobby", "lobby2", "ada"));
        assert!(matches("chat:*", "chat:x", "ada"));
        assert!(matches("chat:*", "chat:", "ada"));
        assert!(!matches("chat:*", "chat", "ada"));
        assert!(matches("*", "anything", "ada"));
        assert!(matches("inbox:{sub}", "inbox:ada", "ada"));
        assert!(!matches("inbox:{sub}", "inbox:adam", "ada"));
        assert!(!matches("inbox:{sub}", "inbox:bob", "ada"));
        assert!(matches("user:{sub}:*", "user:ada:notes", "ada"));
        assert!(!matches("user:{sub}:*", "user:bob:notes", "ada"));
        assert!(matches("dm:{sub}-{sub}", "dm:ada-ada", "ada"));
        // A `*` in the user id is not a wildcard.
        assert!(!matches("inbox:{sub}", "inbox:anything", "*"));
        assert!(matches("inbox:{sub}", "inbox:*", "*"));
        // No user, no template match.
        assert!(!matches("inbox:{sub}", "inbox:", ""));
    }

    #[test]
    fn first_grant_wins_and_no_match_allows_nothing() {
        use Capability::*;
        let config = Config::default();
        let access = Access::new(
            Some("ada".into()),
            Some(vec![
                grant("chat:readonly", &[Sub, Hist]),
                grant("chat:*", &[Sub, Pub, Hist]),
            ]),
        );
        assert_eq!(
            access.check(&config, "chat:readonly", Allow::of([Pub])),
            Err(Pub)
        );
        assert_eq!(
            access.check(&config, "chat:x", Allow::of([Sub, Pub])),
            Ok(())
        );
        assert_eq!(access.check(&config, "other", Allow::of([Sub])), Err(Sub));
    }

    #[test]
    fn without_grants_the_namespace_defaults_apply() {
        use crate::config::NamespaceConfig;
        use Capability::*;
        let mut config = Config::default();
        config.permissions.anonymous = Allow::of([Sub]);
        config.namespaces.insert(
            "news".into(),
            NamespaceConfig {
                authenticated: Some(Allow::of([Sub, Hist])),
                ..NamespaceConfig::default()
            },
        );
        let user = Access::new(Some("ada".into()), None);
        let anon = Access::default();
        assert_eq!(
            user.check(&config, "news:today", Allow::of([Pub])),
            Err(Pub)
        );
        assert_eq!(user.check(&config, "news:today", Allow::of([Hist])), Ok(()));
        assert_eq!(
            user.check(&config, "lobby", Allow::of([Pub, StateWrite])),
            Ok(())
        );
        assert_eq!(anon.check(&config, "lobby", Allow::of([Pub])), Err(Pub));
        assert_eq!(anon.check(&config, "news:today", Allow::of([Sub])), Ok(()));
        assert_eq!(
            anon.check(&config, "news:today", Allow::of([Hist])),
            Err(Hist)
        );
    }
}
