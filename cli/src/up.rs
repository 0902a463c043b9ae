//! `tern up`: the embedded default. Gateway, scheduler and one worker in one
//! process over the in-process bus; nothing else to run.

use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tern_bus::{Bus, InProcessBus};
use tern_gateway::{Gateway, GatewayConfig};
use tern_runtime::{Runtime, RuntimeConfig, Worker};
use tern_scheduler::Scheduler;

#[derive(Args)]
pub struct UpArgs {
    /// Address to serve functions and the admin API on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the registry, compiled artifacts and admin token live
    #[arg(long, env = "TERN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn,sled=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let data_dir = args.data_dir.unwrap_or_else(crate::default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;

    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new());
    let runtime = Runtime::new(RuntimeConfig::new(data_dir.join("cache")))
        .context("cannot start the wasm runtime")?;
    let scheduler =
        Scheduler::open(&data_dir, bus.clone(), runtime.clone()).with_context(|| {
            format!(
                "cannot open the registry in {} (is another tern already using it?)",
                data_dir.display()
            )
        })?;
    scheduler
        .start()
        .await
        .context("cannot start the scheduler")?;
    let worker = Worker::new("local", bus.clone(), runtime.clone());
    worker.start().await.context("cannot start the worker")?;
    // Load every deployed function before taking requests, so a restart
    // serves what it served before from the first request.
    scheduler.node_joined(worker.node_id()).await;

    let token = tern_gateway::token::load_or_create(&data_dir).with_context(|| {
        format!(
            "cannot read or create the admin token in {}",
            data_dir.display()
        )
    })?;
    let config = GatewayConfig {
        body_limit: tern_protocol::DEFAULT_BODY_LIMIT,
        header_limit: 64 * 1024,
        admin_token: token,
    };
    let gateway = Gateway::new(bus, config);
    gateway.start().await.context("cannot start the gateway")?;
    let listener = tern_gateway::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    // One line on stdout that scripts (and the tests) can read.
    println!("tern is up: http://{addr}");
    eprintln!(
        "  data dir:    {}\n  admin token: {}\n  functions:   {}",
        data_dir.display(),
        tern_gateway::token::token_path(&data_dir).display(),
        worker.loaded().len()
    );

    tokio::select! {
        r = gateway.serve(listener) => r.context("the gateway stopped")?,
        _ = shutdown_signal() => eprintln!("shutting down"),
    }
    // Dropping the scheduler flushes and closes the registry.
    drop(scheduler);
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
