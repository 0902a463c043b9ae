//! The function's config through `wasi:config`: its `--env` values and the
//! secrets it was granted with `--secret NAME` (read at the time the
//! instance started, so a rotated secret is seen by the next request).
//!
//! ```ignore
//! let key = tern_sdk::config::require("API_KEY")?;
//! ```

use crate::state::wasi::config::store;

/// The value of config key `key`, if the function has it.
pub fn get(key: &str) -> Result<Option<String>, String> {
    store::get(key).map_err(describe)
}

/// The value of config key `key`, or an error naming the key and how to
/// grant it.
pub fn require(key: &str) -> Result<String, String> {
    get(key)?.ok_or_else(|| {
        format!(
            "config key {key:?} is not set: deploy with --env {key}=VALUE, or --secret {key} for a secret"
        )
    })
}

/// Every config key and value the function has.
pub fn all() -> Result<Vec<(String, String)>, String> {
    store::get_all().map_err(describe)
}

fn describe(e: store::Error) -> String {
    match e {
        store::Error::Upstream(m) => format!("config store: {m}"),
        store::Error::Io(m) => format!("config store I/O: {m}"),
    }
}
