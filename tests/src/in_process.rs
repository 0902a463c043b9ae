//! Every role in this test's process: the in-process bus, the sled event
//! log, scheduler, worker and gateway, exactly as `tern up` composes them
//! (`tern_roles::up`), serving real HTTP on a loopback port. For checks of
//! the logic between the roles that need no process boundary (no kill -9,
//! no restart): it starts in milliseconds and its failures show the whole
//! platform's state in one place.
//!
//! The platform runs on a tokio runtime of its own, so tests stay plain
//! blocking code and use the same [`Client`] as the process harness.

use crate::client::Client;
use std::sync::Arc;
use std::time::Duration;
use tern_bus::InProcessBus;
use tern_roles::{ActivatorConfig, UpConfig};
use tern_scheduler::ScaleConfig;

pub struct InProcess {
    client: Client,
    platform: Option<tern_roles::Platform>,
    runtime: Option<tokio::runtime::Runtime>,
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for InProcess {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Settings a test may change; the defaults are `tern up`'s.
#[derive(Default)]
pub struct Options {
    pub scale: ScaleConfig,
    pub activator: ActivatorConfig,
}

impl InProcess {
    pub fn start() -> InProcess {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> InProcess {
        crate::build::build_once();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime for the platform");
        let data_dir = dir.path().to_path_buf();
        let mut platform = runtime.block_on(async {
            let metrics = Arc::new(tern_metrics::Metrics::new());
            let events = tern_roles::open_events(None, &data_dir, 1, metrics.clone())
                .await
                .expect("open the event log");
            let kv = tern_roles::open_kv(None, &data_dir, 1, tern_kv::DEFAULT_BUCKET_MAX_BYTES)
                .expect("open the buckets");
            let logbook = tern_roles::open_logbook(None, &data_dir, 1, Default::default())
                .await
                .expect("open the logbook");
            let (registry, artifacts) =
                tern_roles::open_up_registry(None, &data_dir, 1).await.expect("open the registry");
            let config = UpConfig {
                data_dir,
                listen: "127.0.0.1:0".parse().unwrap(),
                node_id: "local".into(),
                scale: options.scale,
                activator: options.activator,
                keep: tern_roles::KeepConfig { versions: tern_scheduler::DEFAULT_KEEP_VERSIONS },
                outbound: Default::default(),
                metrics,
                metrics_token: None,
                memory_budget_mib: None,
            };
            let lease = tern_scheduler::leader::Lease::sole();
            let stores = tern_roles::Stores { events, logbook, registry, artifacts, lease };
            tern_roles::up(Arc::new(InProcessBus::new()), stores, kv, config).await.expect("start every role")
        });
        let url = format!("http://{}", platform.gateway.addr);
        let token = std::fs::read_to_string(&platform.gateway.token_path).unwrap().trim().to_string();
        // The listener moves into the serving task; a placeholder stays.
        let listener = std::mem::replace(
            &mut platform.gateway.listener,
            runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap(),
        );
        let gateway = platform.gateway.gateway.clone();
        // Serves until the runtime goes with the harness.
        let forever = std::future::pending();
        runtime.spawn(async move { gateway.serve(listener, forever, Duration::ZERO).await });
        InProcess { client: Client { url, token }, platform: Some(platform), runtime: Some(runtime), dir }
    }

    /// The roles themselves, for checks no API shows.
    pub fn platform(&self) -> &tern_roles::Platform {
        self.platform.as_ref().unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // The roles go before their runtime (sled flushes on drop).
        if let Some(rt) = self.runtime.take() {
            let platform = self.platform.take();
            rt.block_on(async move { drop(platform) });
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
