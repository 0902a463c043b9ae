//! Secrets on the wire: set, list and delete (gateway → scheduler), and a
//! function's values (scheduler → the workers running it). A value is a
//! [`SecretValue`], which never prints: a `{:?}` of any message holding one
//! shows `<redacted>`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A secret's value. Serialised only onto the bus and into sealed storage;
/// never into a log line, an error, or an API response.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(pub String);

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretSetRequest {
    pub name: String,
    pub value: SecretValue,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretDeleteRequest {
    pub name: String,
    /// Delete even while functions are granted it (they then read no value).
    #[serde(default)]
    pub force: bool,
}

/// A secret as `tern secret list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub name: String,
    /// Functions whose active version is granted it.
    pub functions: Vec<String>,
}

/// The current values of the secrets `function` is granted (one absent:
/// deleted with `--force`), for a worker running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretsUpdate {
    pub function: String,
    pub values: BTreeMap<String, SecretValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_never_print() {
        let req = SecretSetRequest { name: "api-key".into(), value: SecretValue("hunter2".into()) };
        let shown = format!("{req:?}");
        assert!(shown.contains("api-key") && !shown.contains("hunter2"), "{shown}");
        assert!(serde_json::to_string(&req).unwrap().contains("hunter2"), "the bus carries it");
    }
}
