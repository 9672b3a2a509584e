//! The members of a cluster and its configurations, as data: what nodes
//! keep in their logs and tell each other (see `core::membership` for the
//! rules a node applies, and `docs/membership.md` for the procedure).

use crate::types::{Epoch, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A digest of the cluster's member list (ids and addresses), carried by
/// every datagram between nodes. Clients send `ConfigDigest::NONE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfigDigest(pub u32);

impl ConfigDigest {
    pub const NONE: ConfigDigest = ConfigDigest(0);
}

impl fmt::Display for ConfigDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// One member: its id and the address its peers and clients reach it at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub address: String,
}

/// The members of a configuration, sorted by id, ids unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Members(Vec<Member>);

impl Members {
    /// Sorts by id; `None` when an id appears twice.
    pub fn new(mut members: Vec<Member>) -> Option<Members> {
        members.sort();
        let unique = members.windows(2).all(|w| w[0].id != w[1].id);
        unique.then_some(Members(members))
    }

    /// Members named by id alone, with placeholder addresses: for the
    /// simulator and tests, where addresses are never dialled.
    pub fn named(ids: &[NodeId]) -> Members {
        let members = ids.iter().map(|id| Member { id: *id, address: format!("node-{id}") });
        Members::new(members.collect()).unwrap_or_default()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.0.iter().map(|m| m.id).collect()
    }

    /// The ids of these members and of `other`'s: every node a change
    /// from one to the other concerns.
    pub fn ids_with(&self, other: &Members) -> std::collections::BTreeSet<NodeId> {
        self.ids().into_iter().chain(other.ids()).collect()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.0.iter().any(|m| m.id == id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.0.iter()
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.0.iter().find(|m| m.id == id)
    }

    /// A digest of ids and addresses, in id order. Never 0, which marks a
    /// client's datagram.
    pub fn digest(&self) -> ConfigDigest {
        let mut hasher = crc32fast::Hasher::new();
        for m in &self.0 {
            hasher.update(&m.id.0.to_le_bytes());
            hasher.update(m.address.as_bytes());
            hasher.update(b"\n");
        }
        ConfigDigest(hasher.finalize().max(1))
    }
}

impl fmt::Display for Members {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(|m| m.id.to_string()).collect();
        write!(f, "{{{}}}", ids.join(","))
    }
}

/// A configuration: the members, and the epoch it was installed at (0 for
/// the founding one). Epochs come from the epoch register, so two
/// configurations of one epoch are the same one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Configuration {
    pub epoch: Epoch,
    pub members: Members,
}

/// What a datagram's header says of its sender's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigTag {
    pub epoch: Epoch,
    pub digest: ConfigDigest,
}

impl Configuration {
    pub fn tag(&self) -> ConfigTag {
        ConfigTag { epoch: self.epoch, digest: self.members.digest() }
    }
}

/// A change of membership: from the configuration of epoch `from` to the
/// members `to`, at `epoch`. Begun by a compare-and-set of the change
/// register, so exactly one change starts from each configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberChange {
    pub epoch: Epoch,
    pub from: Epoch,
    pub to: Members,
}

impl MemberChange {
    /// The configuration the change installs.
    pub fn target(&self) -> Configuration {
        Configuration { epoch: self.epoch, members: self.to.clone() }
    }
}

/// How a node answered a freeze.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreezeAnswer {
    /// It takes part in the change (it did already, or does now).
    Frozen,
    /// It installed the change's configuration already.
    Installed,
    /// Its state is elsewhere: another active epoch, or another change.
    Refused,
}

/// A node's membership state; `Record::Membership` holds it whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub active: Configuration,
    /// The change the node takes part in: it votes for nobody meanwhile.
    pub frozen: Option<MemberChange>,
    /// A node started to join a running cluster: it has never voted, and
    /// votes once it installs a configuration that names it.
    pub joining: bool,
}
