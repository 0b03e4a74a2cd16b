//! `--manifest edges.yaml`: many servers, with shared defaults and per-node overrides.
//!
//! ```yaml
//! defaults:
//!   enrollment_token: enroll_...
//!   ssh_key: ~/.ssh/edges
//!   tune: true
//!   capabilities: [edge, ingest]
//!   labels: {site: fra}
//! nodes:
//!   - name: edge-eu-1
//!     ssh: ubuntu@203.0.113.7
//!   - name: edge-eu-2
//!     ssh: root@203.0.113.8:2222
//!     cluster: home-lab-1a2b3c      # refuse a token of another cluster
//!     tune: false
//! ```
//!
//! Unknown keys are refused with their line, so a misspelt `tune` is not silently ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::ssh::Target;

/// Keys a node may set, each also a default.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    pub name: Option<String>,
    pub ssh: Option<String>,
    pub ssh_key: Option<PathBuf>,
    /// The install directory on the host (default: `--dir`).
    pub dir: Option<String>,
    pub enrollment_token: Option<String>,
    /// The cluster the token must belong to.
    pub cluster: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub tune: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: NodeKeys,
    nodes: Vec<NodeKeys>,
}

/// One node of the manifest, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestNode {
    pub name: String,
    pub ssh: Target,
    pub ssh_key: Option<PathBuf>,
    pub dir: Option<String>,
    pub enrollment_token: String,
    pub cluster: Option<String>,
    pub capabilities: Vec<String>,
    pub tune: bool,
    pub labels: BTreeMap<String, String>,
}

/// Capabilities an edge may announce.
const CAPABILITIES: [&str; 4] = ["edge", "ingest", "storage", "processing"];

/// Reads a manifest; the error names the line, or the node and key, that is wrong.
pub fn parse(text: &str) -> Result<Vec<ManifestNode>, String> {
    let file: File = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if file.nodes.is_empty() {
        return Err("the manifest lists no nodes".into());
    }
    let d = &file.defaults;
    if d.name.is_some() || d.ssh.is_some() {
        return Err("defaults cannot set name or ssh: each node has its own".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut nodes = Vec::with_capacity(file.nodes.len());
    for (i, n) in file.nodes.iter().enumerate() {
        let at = |key: &str| format!("node {} ({key})", i + 1);
        let ssh: Target = n
            .ssh
            .as_deref()
            .ok_or_else(|| format!("{}: missing", at("ssh")))?
            .parse()
            .map_err(|e| format!("{}: {e}", at("ssh")))?;
        let name = n.name.clone().unwrap_or_else(|| ssh.host.clone());
        if !crate::config::is_valid_label(&name) {
            return Err(format!(
                "{}: {name:?} is not a name of lowercase letters, digits and dashes",
                at("name")
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("{}: {name:?} is used twice", at("name")));
        }
        let enrollment_token = n
            .enrollment_token
            .clone()
            .or_else(|| d.enrollment_token.clone())
            .ok_or_else(|| format!("{}: missing (here or in defaults)", at("enrollment_token")))?;
        let capabilities = n
            .capabilities
            .clone()
            .or_else(|| d.capabilities.clone())
            .unwrap_or_else(|| vec!["edge".into(), "ingest".into()]);
        if let Some(bad) = capabilities
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            return Err(format!(
                "{}: {bad:?} is not one of {}",
                at("capabilities"),
                CAPABILITIES.join(", ")
            ));
        }
        let mut labels = d.labels.clone().unwrap_or_default();
        labels.extend(n.labels.clone().unwrap_or_default());
        nodes.push(ManifestNode {
            name,
            ssh,
            ssh_key: n.ssh_key.clone().or_else(|| d.ssh_key.clone()),
            dir: n.dir.clone().or_else(|| d.dir.clone()),
            enrollment_token,
            cluster: n.cluster.clone().or_else(|| d.cluster.clone()),
            capabilities,
            tune: n.tune.or(d.tune).unwrap_or(false),
            labels,
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "\
defaults:
  enrollment_token: enroll_shared
  tune: true
  labels: {site: fra}
nodes:
  - name: edge-eu-1
    ssh: ubuntu@203.0.113.7
  - ssh: root@edge-two:2222
    tune: false
    enrollment_token: enroll_own
    capabilities: [edge]
    labels: {rack: b2}
";

    #[test]
    fn defaults_apply_and_nodes_override() {
        let nodes = parse(MANIFEST).expect("manifest");
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].name, "edge-eu-1");
        assert_eq!(nodes[0].enrollment_token, "enroll_shared");
        assert!(nodes[0].tune);
        assert_eq!(nodes[0].capabilities, ["edge", "ingest"]);
        assert_eq!(nodes[1].name, "edge-two", "named after its host");
        assert_eq!(nodes[1].ssh.port, 2222);
        assert_eq!(nodes[1].enrollment_token, "enroll_own");
        assert!(!nodes[1].tune);
        assert_eq!(nodes[1].labels.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let bad = MANIFEST.replace("    tune: false", "    tunes: false");
        let e = parse(&bad).expect_err("refused");
        assert!(e.contains("tunes"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn bad_nodes_are_named() {
        for (text, said) in [
            ("nodes: []\n", "no nodes"),
            ("nodes:\n  - name: a\n", "node 1 (ssh): missing"),
            (
                "nodes:\n  - ssh: u@h\n",
                "node 1 (enrollment_token): missing",
            ),
            (
                "defaults: {enrollment_token: t}\nnodes:\n  - ssh: u@h\n  - ssh: v@h\n",
                "node 2 (name): \"h\" is used twice",
            ),
            (
                "defaults: {enrollment_token: t}\nnodes:\n  - {ssh: u@h, capabilities: [cdn]}\n",
                "\"cdn\" is not one of",
            ),
            (
                "defaults: {enrollment_token: t}\nnodes:\n  - ssh: not-a-target\n",
                "node 1 (ssh)",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(said), "{text}: {e}");
        }
    }
}
