//! Loading what the scheduler assigns: a function version's component,
//! compiled and linked for its world, with its settings and grants; and
//! unloading, and new secret values for what is loaded.

use super::{Loaded, Serving, Worker, serving};
use crate::artifact::LoadError;
use crate::fetch;
use crate::instance::Settings;
use crate::kinds;
use crate::load::LoadCounters;
use crate::outbound::OutboundGrant;
use crate::state::Grants;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tern_protocol::nats_subject::SubjectPattern;
use tern_protocol::outbound::OutboundPattern;
use tern_protocol::{ApiError, Assign, Generation, Reply, SecretsUpdate, subject};

impl Worker {
    pub(super) async fn assign(self: &Arc<Self>, a: Assign) -> Reply<Generation> {
        {
            let functions = self.functions.lock();
            if functions.loaded.get(&a.function).is_some_and(|l| l.version == a.version) {
                return Ok(functions.generation());
            }
        }
        let internal = |e: LoadError| ApiError::internal(e.to_string());
        let component = fetch::component(&self.runtime, &*self.bus, &*self.artifacts, &a.digest)
            .await
            .map_err(internal)?;
        let code_bytes = crate::artifact::image_bytes(&component) as u64;
        let config = Arc::new(RwLock::new(Arc::new(config_of(&a))));
        let net = self.functions.lock().loaded.get(&a.function).map(|l| l.net.clone());
        let net = net.unwrap_or_else(|| self.outbound.function_net());
        let outbound = Arc::new(OutboundGrant {
            shared: self.outbound.clone(),
            net: net.clone(),
            // Validated at deploy; a pattern that no longer parses grants nothing.
            patterns: a.allow_outbound.iter().filter_map(|p| OutboundPattern::parse(p).ok()).collect(),
            max_body: a.max_outbound_body,
            max_internal_body: self.body_limit,
            pool: Default::default(),
        });
        let settings = Settings {
            name: a.function.clone(),
            version: a.version,
            env: a.env.clone().into_iter().collect(),
            memory_mib: a.memory_mib,
            timeout: Duration::from_millis(a.timeout_ms),
            max_body: a.max_body,
            max_duration: Duration::from_millis(a.max_duration_ms),
            grants: Arc::new(Grants {
                store: self.kv.clone(),
                buckets: a.kv.clone(),
                events: self.events.clone(),
                // Validated at deploy; a pattern that no longer parses grants nothing.
                publish: a.allow_publish.iter().filter_map(|p| SubjectPattern::parse(p).ok()).collect(),
                max_event_bytes: self.body_limit,
            }),
            config: config.clone(),
            outbound: Some(outbound),
            node_memory: self.memory.clone(),
            instance_reuse: a.instance_reuse,
        };
        let link = |reason: String| internal(LoadError::Link { digest: a.digest.clone(), reason });
        let pre = self.runtime.linker.instantiate_pre(&component).map_err(|e| link(format!("{e:#}")))?;
        let function = kinds::of_world(a.world).load(pre, settings, self.body_limit).map_err(link)?;

        {
            let mut functions = self.functions.lock();
            if let Some(loaded) = functions.loaded.get_mut(&a.function) {
                *loaded.current.write() = function;
                loaded.version = a.version;
                loaded.digest = a.digest.clone();
                loaded.code_bytes = code_bytes;
                loaded.config = config;
                loaded.secret_names = a.secrets.clone();
                functions.changes += 1;
                self.memory.set_footprint(functions.footprint());
                tracing::info!(function = %a.function, version = a.version, "switched version");
                return Ok(functions.generation());
            }
        }
        let sub = self
            .bus
            .queue_subscribe(&subject::invoke(&a.function), &subject::invoke_queue_group(&a.function))
            .await
            .map_err(|e| ApiError::unavailable(format!("could not subscribe: {e}")))?;
        let current = Arc::new(RwLock::new(function));
        let load = Arc::new(LoadCounters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let on = Arc::new(Serving {
            bus: self.bus.clone(),
            streams: self.streams.get().cloned(),
            journal: self.journal.clone(),
            metrics: self.metrics.clone(),
            node: self.config.node_id.clone(),
        });
        tokio::spawn(serving::serve(on, sub, stopped, current.clone(), load.clone()));
        let loaded = Loaded {
            version: a.version,
            digest: a.digest.clone(),
            code_bytes,
            current,
            config,
            secret_names: a.secrets.clone(),
            load,
            net,
            _stop: stop,
        };
        let generation = {
            let mut functions = self.functions.lock();
            functions.loaded.insert(a.function.clone(), loaded);
            functions.changes += 1;
            self.memory.set_footprint(functions.footprint());
            functions.generation()
        };
        tracing::info!(function = %a.function, version = a.version, "loaded");
        Ok(generation)
    }

    /// New values of a loaded function's secrets: the next instance reads
    /// them. A secret left out was deleted; its key goes.
    pub(super) fn update_secrets(&self, update: SecretsUpdate) -> Result<(), ApiError> {
        let functions = self.functions.lock();
        let Some(loaded) = functions.loaded.get(&update.function) else {
            return Err(ApiError::not_found(format!("{} is not loaded here", update.function)));
        };
        let mut config = (**loaded.config.read()).clone();
        for name in &loaded.secret_names {
            match update.values.get(name) {
                Some(v) => config.insert(name.clone(), v.0.clone()),
                None => config.remove(name),
            };
        }
        *loaded.config.write() = Arc::new(config);
        Ok(())
    }

    pub(super) fn unassign(&self, function: &str) -> Generation {
        let mut functions = self.functions.lock();
        if functions.loaded.remove(function).is_some() {
            functions.changes += 1;
            self.memory.set_footprint(functions.footprint());
            self.metrics.inflight(function, 0);
            tracing::info!(function, "unloaded");
        }
        functions.generation()
    }
}

/// A function's `wasi:config` keys: its `--env` values and its secrets
/// (names never collide: deploy refuses a secret named like an env key).
fn config_of(a: &Assign) -> BTreeMap<String, String> {
    let mut config = a.env.clone();
    config.extend(a.secret_values.iter().map(|(k, v)| (k.clone(), v.0.clone())));
    config
}
