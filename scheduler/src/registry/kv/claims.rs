//! Route claims: how two schedulers deploying one route never both win it.
//! A claim is the key `route/<hex of the route's shape>` naming a function;
//! it is taken by a create or a revision-checked swap, and binds only while
//! its owner's active version has the route or it is fresh.

use super::{KvRegistry, MAX_ATTEMPTS, too_busy};
use crate::registry::{Registry, RegistryError, Result, decode, encode, route_taken, shape};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_kv::Expect;
use tern_protocol::clock;

/// How long a route claim binds without its owner's active version having
/// the route: longer than any change takes between claiming it and
/// recording the version.
const CLAIM_FRESH_MS: u64 = 30_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    function: String,
    /// When the claim was made or renewed (ms since the epoch).
    at_ms: u64,
}

fn route_key(route: &str) -> String {
    format!("route/{}", hex::encode(shape(route)))
}

impl KvRegistry {
    /// Takes `routes` for `name`, in one order on every scheduler (so two
    /// changes wanting the same routes cannot each hold half of them). On
    /// a conflict, lets go of the claims it made and says whose the route
    /// is.
    pub(super) async fn claim(&self, name: &str, routes: &[String]) -> Result<()> {
        let mut wanted: Vec<(String, &String)> = routes.iter().map(|r| (route_key(r), r)).collect();
        wanted.sort();
        wanted.dedup_by(|a, b| a.0 == b.0);
        let mut made = Vec::new();
        for (key, route) in wanted {
            match self.claim_one(name, &key, route).await {
                Ok(Some(rev)) => made.push((key, rev)),
                Ok(None) => {}
                Err(e) => {
                    for (key, rev) in made {
                        let _ = self.bucket.delete_if(&key, rev).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The revision of a claim newly made for `name`; `None` if `name`
    /// held it already (then it is renewed).
    async fn claim_one(&self, name: &str, key: &str, route: &str) -> Result<Option<u64>> {
        let claim = Bytes::from(encode(&Claim { function: name.to_string(), at_ms: clock::now_ms() }));
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.bucket.get(key).await? else {
                match self.bucket.swap(key, Expect::Absent, claim.clone(), None).await? {
                    Some(rev) => return Ok(Some(rev)),
                    None => continue,
                }
            };
            let held: Claim = decode(key.as_bytes(), &entry.value)?;
            if held.function != name && self.binds(&held, route).await? {
                return Err(route_taken(route, &held.function));
            }
            let mine = held.function == name;
            if let Some(rev) =
                self.bucket.swap(key, Expect::Revision(entry.revision), claim.clone(), None).await?
            {
                return Ok((!mine).then_some(rev));
            }
        }
        Err(too_busy(name))
    }

    /// Whether `held` still keeps `route` from others.
    async fn binds(&self, held: &Claim, route: &str) -> Result<bool> {
        if clock::now_ms().saturating_sub(held.at_ms) < CLAIM_FRESH_MS {
            return Ok(true);
        }
        let Some((_, owner)) = self.read(&held.function).await? else { return Ok(false) };
        if owner.deleting {
            return Ok(false);
        }
        let active = match self.version(&held.function, owner.active_version).await {
            Ok(v) => v,
            Err(RegistryError::NotFound(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let wanted = shape(route);
        Ok(active.spec.routes.iter().any(|r| shape(r) == wanted))
    }

    /// Lets go of `name`'s claims on `routes` (those another function took
    /// meanwhile stay). A claim left by a failure here lapses by itself.
    pub(super) async fn release(&self, name: &str, routes: &[String]) {
        for route in routes {
            let key = route_key(route);
            let Ok(Some(entry)) = self.bucket.get(&key).await else { continue };
            if decode::<Claim>(key.as_bytes(), &entry.value).is_ok_and(|c| c.function == name)
                && let Err(e) = self.bucket.delete_if(&key, entry.revision).await
            {
                tracing::warn!(function = name, route, "cannot let go of a route (it lapses by itself): {e}");
            }
        }
    }
}
