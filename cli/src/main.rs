//! `tern`: runs the roles, and talks to a running gateway's admin API.

mod client;
mod deploy;
mod observe;
#[cfg(test)]
mod reference;
mod state;
mod up;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

// A request allocates and frees many small objects across threads (hyper,
// the bus, wasmtime's store and instance); glibc malloc was ~8% of a hello
// request's CPU. See BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tern", version, about = "Tern: a serverless platform for WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run gateway, scheduler and a worker in one process (in-process bus unless --nats)
    Up(up::UpArgs),
    /// Run the scheduler role of a cluster (registry, placement)
    Scheduler(up::SchedulerArgs),
    /// Run a worker node of a cluster (runs functions)
    Worker(up::WorkerArgs),
    /// Run a gateway of a cluster (HTTP routes and admin API)
    Gateway(up::GatewayArgs),
    /// Show nodes, their capacity and load, and replicas per function
    Status {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Deploy a component as a new immutable version of a function
    Deploy(deploy::DeployArgs),
    /// List functions
    List {
        #[command(flatten)]
        conn: Conn,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a function's active version, settings and every version
    Describe {
        name: String,
        #[command(flatten)]
        conn: Conn,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a function, its versions and routes
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Make an earlier version active again
    Rollback {
        name: String,
        /// Version to activate (default: the one before the active one)
        #[arg(long)]
        to: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Call a function directly, without going through its routes
    Invoke {
        name: String,
        /// Path (and query) the function sees
        #[arg(long, default_value = "/")]
        path: String,
        /// Request body: text, `@FILE` to stream a file, or `-` to stream stdin; with it the request is a POST unless --method says otherwise
        #[arg(long)]
        data: Option<String>,
        /// HTTP method
        #[arg(long)]
        method: Option<String>,
        /// For an event function: the subject the event carries (default invoke.NAME); --data is its data
        #[arg(long)]
        subject: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Publish an event; returns once it is durable (exit 1 if no function is triggered by SUBJECT)
    Publish {
        /// Subject, e.g. orders.created (no wildcards)
        subject: String,
        /// The event's data; `-` reads it from stdin
        data: String,
        /// Event header (repeatable)
        #[arg(long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        headers: Vec<(String, String)>,
        /// Print the stored event as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Dead letters: events a function failed max-attempts times
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Key-value buckets: list, get, set and delete keys
    Kv {
        #[command(subcommand)]
        command: state::KvCommand,
    },
    /// Secrets functions read through wasi:config: set, list, delete
    Secret {
        #[command(subcommand)]
        command: state::SecretCommand,
    },
    /// Show a function's logs (stdout, stderr, Tern's notes on failures,
    /// and a REPORT line after each invocation)
    Logs {
        name: String,
        /// Keep printing new lines until interrupted
        #[arg(long, short)]
        follow: bool,
        /// How many recent lines to show first
        #[arg(long, default_value_t = 200)]
        tail: usize,
        /// Only lines written within this long (10m, 2h, …)
        #[arg(long, value_parser = parse_duration, value_name = "DUR")]
        since: Option<Duration>,
        /// Only lines containing this text
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
        /// Only the lines of this invocation (its Tern-Invocation-Id)
        #[arg(long, value_name = "ID")]
        invocation: Option<String>,
        /// Print JSON lines
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List a function's recent invocations, newest first: one receipt each
    /// (status, duration, time in the guest, peak memory, bytes, node)
    Invocations {
        name: String,
        /// Only the failed ones (5xx, or an event that was not handled)
        #[arg(long)]
        failed: bool,
        /// How many to show at most
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List a function's dead letters, oldest first
    List {
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Deliver dead letters to the function again (all, or the one with ID); each handled one is removed
    Replay {
        name: String,
        /// Only this event id
        id: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Where the gateway is and how to authenticate to it.
#[derive(Args, Clone)]
pub struct Conn {
    /// Gateway URL
    #[arg(long, env = "TERN_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// Admin token (default: read from the default data dir's admin-token file)
    #[arg(long, env = "TERN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A CA certificate (PEM) to trust for an https:// gateway, beside the system's
    #[arg(long, env = "TERN_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A size in bytes: a number, with an optional unit: KiB, MiB, GiB (or
/// K, M, G: the same), or kB, MB, GB (powers of 1000).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 =
        num.parse().map_err(|_| format!("{s:?} is not a size (use forms like 512KiB, 8MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unit {other:?} is not one of B, KiB, MiB, GiB, kB, MB, GB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (use forms like 500ms, 2s, 1m)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// The data dir used when none is given: `$TERN_DATA_DIR`, else
/// `$XDG_DATA_HOME/tern`, else `~/.local/share/tern`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TERN_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("tern");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/tern")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Up(args) => up::up(args).await,
            Command::Scheduler(args) => up::scheduler(args).await,
            Command::Worker(args) => up::worker(args).await,
            Command::Gateway(args) => up::gateway(args).await,
            Command::Status { conn, json } => client::status(&conn, json).await,
            Command::Deploy(args) => deploy::deploy(args).await,
            Command::List { conn, json } => client::list(&conn, json).await,
            Command::Describe { name, conn, json } => client::describe(&conn, &name, json).await,
            Command::Delete { name, conn } => client::delete(&conn, &name).await,
            Command::Rollback { name, to, conn } => client::rollback(&conn, &name, to).await,
            Command::Invoke { name, path, data, method, subject, conn } => {
                client::invoke(&conn, &name, &path, data, method, subject).await
            }
            Command::Publish { subject, data, headers, json, conn } => {
                client::publish(&conn, &subject, data, headers, json).await
            }
            Command::Dlq { command: DlqCommand::List { name, json, conn } } => {
                client::dlq_list(&conn, &name, json).await
            }
            Command::Dlq { command: DlqCommand::Replay { name, id, json, conn } } => {
                client::dlq_replay(&conn, &name, id, json).await
            }
            Command::Kv { command } => state::kv(command).await,
            Command::Secret { command } => state::secret(command).await,
            Command::Logs { name, follow, tail, since, grep, invocation, json, conn } => {
                let filter = observe::LogFilter { tail, since, grep, invocation };
                observe::logs(&conn, &name, follow, filter, json).await
            }
            Command::Invocations { name, failed, limit, json, conn } => {
                observe::invocations(&conn, &name, failed, limit, json).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
