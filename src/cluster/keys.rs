//! Where a room lives in Redis: its keys and its live channel.
//!
//! Every key of a room carries the same hash tag, its partition (a hash of the name modulo
//! [`PARTITIONS`]), so one Function can touch them all on Redis Cluster, and rooms spread
//! over the cluster's slots however their names look (a room name may hold `{` or `}`).

/// The node instances alive: a ZSET of instance -> the moment (ms) its heartbeat lapses.
pub(crate) const NODES: &str = "roomd:nodes";

/// Fixed for the life of a deployment: changing it moves every room to other keys.
const PARTITIONS: u32 = 1024;

/// A room's Redis keys, in the order the Functions take them.
pub(crate) struct RoomKeys {
    pub meta: String,
    pub log: String,
    pub state: String,
    pub mids: String,
    /// HASH conn -> [`super::feed::Member`]: who is present, on every node.
    pub presence: String,
    /// The channel its writes are published on.
    pub channel: String,
}

impl RoomKeys {
    pub(crate) fn new(room: &str) -> RoomKeys {
        let base = format!("roomd:{{{}}}:{room}", partition(room));
        RoomKeys {
            meta: format!("{base}:meta"),
            log: format!("{base}:log"),
            state: format!("{base}:state"),
            mids: format!("{base}:mids"),
            presence: format!("{base}:presence"),
            channel: format!("{base}:live"),
        }
    }

    /// The four data keys, as the Functions' `KEYS`.
    pub(crate) fn all(&self) -> [&str; 4] {
        [&self.meta, &self.log, &self.state, &self.mids]
    }
}

/// FNV-1a: stable across nodes, builds and platforms (unlike std's `DefaultHasher`).
fn partition(room: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in room.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % PARTITIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_tag_and_partitions_are_stable() {
        let k = RoomKeys::new("chat:{x}");
        let tag = &k.meta[..k.meta.find('}').unwrap() + 1];
        for key in k.all().into_iter().chain([k.channel.as_str(), &k.presence]) {
            assert!(key.starts_with(tag), "{key}");
        }
        // Pinned: a change would move every deployed room.
        assert_eq!(partition("chat:lobby"), partition("chat:lobby"));
        assert_eq!(
            RoomKeys::new("a").meta,
            format!("roomd:{{{}}}:a:meta", 0xe40c_292c_u32 % 1024)
        );
    }
}
