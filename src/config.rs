//! `paxosd.toml`: one file describes the whole cluster; every node and every
//! client reads the same file. See the commented example at the repository
//! root for every setting.

use crate::limits;
use crate::members::{Member, Members};
use crate::types::{ClusterId, NodeId};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_id: u64,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    previous_secret_file: Option<PathBuf>,
    #[serde(default)]
    client: RawClient,
    #[serde(rename = "node", default)]
    nodes: Vec<RawNode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: u16,
    address: String,
    data_dir: PathBuf,
    /// Not a founding member: the node joins when `paxosctl member add`
    /// adds it.
    #[serde(default)]
    joins: bool,
}

/// A validated cluster description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub cluster_id: ClusterId,
    /// The cluster secret's key file, resolved against the config file's
    /// directory when relative (`auth`); `None`: datagrams carry no MAC.
    pub secret_file: Option<PathBuf>,
    /// A second key accepted but not sent with, during a rotation.
    pub previous_secret_file: Option<PathBuf>,
    pub client_timeout_ms: u64,
    pub nodes: Vec<NodeConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub address: SocketAddr,
    /// Resolved against the config file's directory when relative.
    pub data_dir: PathBuf,
    /// Not a founding member (`joins = true`): it starts as a joiner and
    /// votes once a membership change adds it.
    pub joins: bool,
}

#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, error: std::io::Error },
    Parse { path: PathBuf, message: String },
    Invalid { path: PathBuf, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, error } => {
                write!(f, "cannot read config {}: {error}", path.display())
            }
            ConfigError::Parse { path, message } => {
                write!(f, "config {} is not valid: {}", path.display(), message.trim_end())
            }
            ConfigError::Invalid { path, message } => {
                write!(f, "config {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`, read from `path` (used to resolve
    /// relative data dirs and in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let nodes = validate_nodes(&raw.nodes, &base).map_err(invalid)?;
        let client_timeout_ms = raw.client.timeout_ms.unwrap_or(limits::REQUEST_TIMEOUT_MS_DEFAULT);
        if client_timeout_ms == 0 || client_timeout_ms > limits::REQUEST_TIMEOUT_MS_MAX {
            return Err(invalid(format!(
                "client.timeout_ms = {client_timeout_ms}: must be between 1 and {}",
                limits::REQUEST_TIMEOUT_MS_MAX
            )));
        }
        if raw.previous_secret_file.is_some() && raw.secret_file.is_none() {
            return Err(invalid(
                "previous_secret_file is set without secret_file: set both, or neither".into(),
            ));
        }
        let resolve = |p: &PathBuf| if p.is_absolute() { p.clone() } else { base.join(p) };
        Ok(Config {
            path: path.to_path_buf(),
            cluster_id: ClusterId(raw.cluster_id),
            secret_file: raw.secret_file.as_ref().map(resolve),
            previous_secret_file: raw.previous_secret_file.as_ref().map(resolve),
            client_timeout_ms,
            nodes,
        })
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The founding configuration's members: the nodes of the file that do
    /// not say `joins = true`. Once a membership change is installed, the
    /// nodes keep the configuration in their logs and this is not read.
    pub fn founding_members(&self) -> Members {
        let founding = self.nodes.iter().filter(|n| !n.joins);
        let members = founding.map(|n| Member { id: n.id, address: n.address.to_string() });
        // `load` refuses a file that names an id twice.
        Members::new(members.collect()).unwrap_or_default()
    }

    /// The node whose address is `addr`, for checking a peer datagram's
    /// claimed sender against where it came from.
    pub fn node_at(&self, addr: SocketAddr) -> Option<NodeId> {
        self.nodes.iter().find(|n| n.address == addr).map(|n| n.id)
    }
}

fn validate_nodes(raw: &[RawNode], base: &Path) -> Result<Vec<NodeConfig>, String> {
    if raw.is_empty() {
        return Err("no [[node]] entries: describe every node of the cluster".into());
    }
    if raw.len() > limits::NODES_MAX {
        return Err(format!("{} nodes: at most {} are supported", raw.len(), limits::NODES_MAX));
    }
    let (mut ids, mut addrs) = (HashSet::new(), HashSet::new());
    let mut nodes = Vec::new();
    for node in raw {
        if node.id == 0 {
            return Err("node id 0 is reserved: ids start at 1".into());
        }
        if !ids.insert(node.id) {
            return Err(format!("node id {} appears twice", node.id));
        }
        let address: SocketAddr = node.address.parse().map_err(|_| {
            format!("node {}: address {:?} is not IP:PORT (e.g. 127.0.0.1:7101)", node.id, node.address)
        })?;
        if address.port() == 0 || address.ip().is_unspecified() {
            return Err(format!("node {}: address {address} must name a real IP and port", node.id));
        }
        if !addrs.insert(address) {
            return Err(format!("node {}: address {address} is used by another node", node.id));
        }
        let data_dir =
            if node.data_dir.is_absolute() { node.data_dir.clone() } else { base.join(&node.data_dir) };
        nodes.push(NodeConfig { id: NodeId(node.id), address, data_dir, joins: node.joins });
    }
    if nodes.iter().all(|n| n.joins) {
        return Err("every node says joins = true: name the founding members (without it)".into());
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster_id = 7
[client]
timeout_ms = 3000
[[node]]
id = 1
address = "127.0.0.1:7101"
data_dir = "data/node1"
[[node]]
id = 2
address = "127.0.0.1:7102"
data_dir = "/var/lib/paxosd"
"#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/px/paxosd.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_and_resolves_relative_dirs() {
        let c = parse(GOOD).expect("valid config");
        assert_eq!(c.cluster_id, ClusterId(7));
        assert_eq!(c.client_timeout_ms, 3000);
        assert_eq!(c.nodes[0].data_dir, PathBuf::from("/etc/px/data/node1"));
        assert_eq!(c.nodes[1].data_dir, PathBuf::from("/var/lib/paxosd"));
        assert_eq!(c.node_at("127.0.0.1:7102".parse().expect("addr")), Some(NodeId(2)));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&GOOD.replace("cluster_id = 7", "cluster_id = 7\nclusterid = 8")).unwrap_err();
        assert!(err.contains("clusterid"), "{err}");
    }

    #[test]
    fn duplicate_id_is_an_error() {
        let err = parse(&GOOD.replace("id = 2", "id = 1")).unwrap_err();
        assert!(err.contains("node id 1 appears twice"), "{err}");
    }

    #[test]
    fn bad_address_is_an_error() {
        let err = parse(&GOOD.replace("127.0.0.1:7102", "localhost")).unwrap_err();
        assert!(err.contains("\"localhost\" is not IP:PORT"), "{err}");
        let err = parse(&GOOD.replace("127.0.0.1:7102", "127.0.0.1:7101")).unwrap_err();
        assert!(err.contains("used by another node"), "{err}");
    }

    #[test]
    fn id_zero_and_empty_cluster_are_errors() {
        assert!(parse(&GOOD.replace("id = 2", "id = 0")).unwrap_err().contains("reserved"));
        assert!(parse("cluster_id = 1").unwrap_err().contains("no [[node]]"));
    }

    #[test]
    fn key_files_resolve_against_the_config_and_need_each_other() {
        let c = parse(&GOOD.replace("cluster_id = 7", "cluster_id = 7\nsecret_file = \"keys/a\""))
            .expect("valid");
        assert_eq!(c.secret_file, Some(PathBuf::from("/etc/px/keys/a")));
        assert_eq!(c.previous_secret_file, None);
        let alone = GOOD.replace("cluster_id = 7", "cluster_id = 7\nprevious_secret_file = \"/k\"");
        assert!(parse(&alone).unwrap_err().contains("without secret_file"));
    }

    #[test]
    fn bad_timeout_is_an_error() {
        let err = parse(&GOOD.replace("timeout_ms = 3000", "timeout_ms = 0")).unwrap_err();
        assert!(err.contains("client.timeout_ms"), "{err}");
    }
}
