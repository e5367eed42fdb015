//! API keys and the cluster secret.
//!
//! The key file (`hektor serve --api-keys FILE`) is JSON:
//!
//! ```json
//! {"keys": [
//!   {"name": "ops", "key": "…", "scopes": ["read", "write", "admin"], "collections": ["*"]},
//!   {"name": "team-a", "key": "…", "scopes": ["read", "write"], "collections": ["docs", "team-a-*"]}
//! ]}
//! ```
//!
//! Scopes are independent: `read` (searches, vector reads, collection and cluster views,
//! metrics), `write` (upserts and deletes), `admin` (creating and dropping collections,
//! plan requests). `collections` lists names, `*` for all, or a prefix ending in `*`; it
//! defaults to all. Keys are kept only as SHA-256 digests and looked up by digest, so a
//! key is never compared byte by byte and never printed.
//!
//! The cluster secret is what nodes present to each other on `/internal/...`; client keys
//! never open those routes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AccessError;

/// Shortest key or secret accepted: 16 characters.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest key or secret accepted.
pub const MAX_SECRET_LEN: usize = 512;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Searches, vector reads, collection and cluster views, metrics.
    Read,
    /// Upserts and deletes.
    Write,
    /// Creating and dropping collections; split, merge, move and tier requests.
    Admin,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

/// Which collections a key opens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Collections {
    All,
    /// Exact names, and prefixes (written `prefix*`).
    Only {
        names: BTreeSet<String>,
        prefixes: Vec<String>,
    },
}

/// What one key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The key's name in the file (for logs), or `key #n`.
    pub name: String,
    scopes: BTreeSet<Scope>,
    collections: Collections,
}

impl Grant {
    /// Whether the key has `scope` on `collection`, or on every collection when
    /// `collection` is `None` (cluster-wide views need a key for all of them).
    pub fn allows(&self, scope: Scope, collection: Option<&str>) -> bool {
        self.scopes.contains(&scope) && self.covers(collection)
    }

    /// Whether the key opens `collection` (every collection when `None`).
    pub fn covers(&self, collection: Option<&str>) -> bool {
        match (&self.collections, collection) {
            (Collections::All, _) => true,
            (Collections::Only { .. }, None) => false,
            (Collections::Only { names, prefixes }, Some(c)) => {
                names.contains(c) || prefixes.iter().any(|p| c.starts_with(p.as_str()))
            }
        }
    }

    /// Whether the key has `scope` at all.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    #[serde(default)]
    name: Option<String>,
    key: String,
    scopes: Vec<Scope>,
    #[serde(default)]
    collections: Option<Vec<String>>,
}

type KeyDigest = [u8; 32];

fn digest(secret: &str) -> KeyDigest {
    Sha256::digest(secret.as_bytes()).into()
}

/// Why a key or secret is unfit to be one, if it is.
fn unfit_secret(secret: &str) -> Option<String> {
    if secret.len() < MIN_SECRET_LEN {
        return Some(format!("is shorter than {MIN_SECRET_LEN} characters"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Some(format!("is longer than {MAX_SECRET_LEN} characters"));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("has a character that is not printable ASCII (or a space)".into());
    }
    None
}

/// The keys of a key file, by digest.
#[derive(Clone, Default)]
pub struct KeyRing {
    by_digest: HashMap<KeyDigest, Grant>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.by_digest.values().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        f.debug_struct("KeyRing").field("keys", &names).finish()
    }
}

impl KeyRing {
    /// Parse a key file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<KeyRing, AccessError> {
        let bad = |reason: String| AccessError::KeyFile {
            origin: origin.to_owned(),
            reason,
        };
        let file: KeyFile = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.keys.is_empty() {
            return Err(bad("it lists no keys".into()));
        }
        let mut by_digest = HashMap::new();
        for (i, entry) in file.keys.into_iter().enumerate() {
            let name = entry
                .name
                .clone()
                .unwrap_or_else(|| format!("key #{}", i + 1));
            let at = |what: String| bad(format!("keys[{i}] ({name}): {what}"));
            if let Some(why) = unfit_secret(&entry.key) {
                return Err(at(format!("the key {why}")));
            }
            if entry.scopes.is_empty() {
                return Err(at("it has no scopes (use read, write, admin)".into()));
            }
            let collections = match entry.collections {
                None => Collections::All,
                Some(list) if list.is_empty() => {
                    return Err(at(
                        "`collections` is empty: list names, `prefix*`, or `*`".into()
                    ))
                }
                Some(list) if list.iter().any(|c| c == "*") => Collections::All,
                Some(list) => {
                    let mut names = BTreeSet::new();
                    let mut prefixes = Vec::new();
                    for c in list {
                        let stem = c.strip_suffix('*').unwrap_or(&c);
                        let fine = !stem.is_empty()
                            && stem.len() <= 200
                            && stem
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'));
                        if !fine {
                            return Err(at(format!(
                                "`{c}` is not a collection name, `prefix*` or `*`"
                            )));
                        }
                        if c.ends_with('*') {
                            prefixes.push(stem.to_owned());
                        } else {
                            names.insert(c);
                        }
                    }
                    Collections::Only { names, prefixes }
                }
            };
            let grant = Grant {
                name: name.clone(),
                scopes: entry.scopes.into_iter().collect(),
                collections,
            };
            if by_digest.insert(digest(&entry.key), grant).is_some() {
                return Err(at("the same key appears twice".into()));
            }
        }
        Ok(KeyRing { by_digest })
    }

    /// Read and parse a key file.
    pub fn load(path: &Path) -> Result<KeyRing, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io {
            path: path.display().to_string(),
            source,
        })?;
        KeyRing::parse(&text, &path.display().to_string())
    }

    /// The grant of a presented key, if it is one.
    pub fn find(&self, presented: &str) -> Option<&Grant> {
        self.by_digest.get(&digest(presented))
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The secret nodes of one cluster present to each other (`Authorization: Bearer …` on
/// `/internal/...`). Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret {
    secret: String,
    digest: KeyDigest,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A secret from text (trailing newlines of a file are dropped).
    pub fn new(text: &str) -> Result<ClusterSecret, AccessError> {
        let secret = text.trim_end_matches(['\n', '\r']).to_owned();
        if let Some(reason) = unfit_secret(&secret) {
            return Err(AccessError::Secret { reason });
        }
        Ok(ClusterSecret {
            digest: digest(&secret),
            secret,
        })
    }

    /// Read a secret from a file.
    pub fn load(path: &Path) -> Result<ClusterSecret, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Io {
            path: path.display().to_string(),
            source,
        })?;
        ClusterSecret::new(&text)
    }

    /// A random secret (for a node alone: no other node knows it).
    pub fn generate() -> ClusterSecret {
        let bytes: [u8; 32] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        ClusterSecret::new(&text).expect("64 hex digits are a fit secret")
    }

    /// Whether `presented` is this secret (compared by digest, in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let other = digest(presented);
        self.digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The `Authorization` header value a node sends.
    pub fn authorization(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    /// Whether a client key has the same text (refused: the secret must be separate).
    pub fn is_in(&self, keys: &KeyRing) -> bool {
        keys.by_digest.contains_key(&self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-key-of-sixteen-chars";
    const KEY_B: &str = "b-key-of-sixteen-chars";

    #[test]
    fn keys_grant_their_scopes_on_their_collections() {
        let text = format!(
            r#"{{"keys": [
                {{"name": "ops", "key": "{KEY_A}", "scopes": ["read", "write", "admin"]}},
                {{"key": "{KEY_B}", "scopes": ["read"], "collections": ["docs", "team-a-*"]}}
            ]}}"#
        );
        let ring = KeyRing::parse(&text, "keys.json").unwrap();
        assert_eq!(ring.len(), 2);
        let ops = ring.find(KEY_A).unwrap();
        assert_eq!(ops.name, "ops");
        assert!(ops.allows(Scope::Admin, Some("anything")));
        assert!(ops.allows(Scope::Read, None));
        let reader = ring.find(KEY_B).unwrap();
        assert_eq!(reader.name, "key #2");
        assert!(reader.allows(Scope::Read, Some("docs")));
        assert!(reader.allows(Scope::Read, Some("team-a-x")));
        assert!(!reader.allows(Scope::Read, Some("docs2")));
        assert!(!reader.allows(Scope::Read, Some("team-b")));
        assert!(
            !reader.allows(Scope::Read, None),
            "cluster-wide needs every collection"
        );
        assert!(!reader.allows(Scope::Write, Some("docs")));
        assert!(ring.find("a-key-of-sixteen-charz").is_none());
        assert!(!format!("{ring:?}").contains(KEY_A));
    }

    #[test]
    fn bad_key_files_say_what_is_wrong_without_the_key() {
        let cases = [
            (r#"{"keys": []}"#.to_owned(), "no keys"),
            (
                r#"{"keys": [{"key": "short", "scopes": ["read"]}]}"#.to_owned(),
                "shorter than 16",
            ),
            (
                format!(r#"{{"keys": [{{"key": "{KEY_A}", "scopes": []}}]}}"#),
                "no scopes",
            ),
            (
                format!(r#"{{"keys": [{{"key": "{KEY_A}", "scopes": ["root"]}}]}}"#),
                "unknown variant",
            ),
            (
                format!(
                    r#"{{"keys": [{{"key": "{KEY_A}", "scopes": ["read"], "collections": ["a/b"]}}]}}"#
                ),
                "not a collection name",
            ),
            (
                format!(
                    r#"{{"keys": [{{"key": "{KEY_A}", "scopes": ["read"]}}, {{"key": "{KEY_A}", "scopes": ["write"]}}]}}"#
                ),
                "twice",
            ),
            (
                format!(r#"{{"keys": [{{"key": "{KEY_A}", "scope": ["read"]}}]}}"#),
                "unknown field",
            ),
            (
                format!(r#"{{"keys": [{{"key": "{KEY_A} x", "scopes": ["read"]}}]}}"#),
                "printable",
            ),
        ];
        for (text, needle) in cases {
            let err = KeyRing::parse(&text, "k.json").unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(err.contains("k.json"), "{err}");
            assert!(!err.contains(KEY_A), "the key leaked: {err}");
        }
    }

    #[test]
    fn the_cluster_secret_matches_itself_only_and_never_shows() {
        let s = ClusterSecret::new("0123456789abcdef-secret\n").unwrap();
        assert!(s.matches("0123456789abcdef-secret"));
        assert!(!s.matches("0123456789abcdef-secreT"));
        assert!(!s.matches(""));
        assert_eq!(s.authorization(), "Bearer 0123456789abcdef-secret");
        assert!(!format!("{s:?}").contains("0123"));
        assert!(ClusterSecret::new("too-short").is_err());
        let g = ClusterSecret::generate();
        assert!(!g.matches(&ClusterSecret::generate().secret));
    }
}
