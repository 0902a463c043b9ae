//! End-to-end tests of a cluster: real `nats-server`s (JetStream), the roles
//! as separate `tern` processes, and the JetStream implementations of each
//! seam. One test binary, so wasmtime is linked once; each file is a module.

mod artifacts_jetstream;
mod bus_nats;
mod cluster;
mod cluster_artifacts;
mod cluster_events;
mod cluster_state;
mod events_jetstream;
mod ha;
mod ha_nats;
mod hardening_cluster;
mod hardening_events;
mod kv_jetstream;
mod logbook_jetstream;
mod registry_jetstream;
mod scaling;
