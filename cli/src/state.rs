//! `tern kv …` and `tern secret …`: operators' access to functions' state
//! through the admin API. A secret's value is read from stdin or a file,
//! never from the command line (where `ps` and shell history would keep it),
//! and no command ever prints one.

use crate::Conn;
use crate::client::{Api, print_json};
use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tern_protocol::SecretInfo;

#[derive(Subcommand)]
pub enum KvCommand {
    /// List a bucket's keys
    List {
        bucket: String,
        /// Only keys starting with this
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Print a key's value as it is (bytes); exit 1 if the key is absent
    Get {
        bucket: String,
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Set a key: to VALUE, or to what --from-file or stdin holds
    Set {
        bucket: String,
        key: String,
        /// The value; without it, read from --from-file or stdin
        value: Option<String>,
        /// Read the value from this file
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a key
    Delete {
        bucket: String,
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set or rotate a secret; its value is read from stdin (or --from-file), one trailing newline dropped
    Set {
        name: String,
        /// Read the value from this file
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List secrets and the functions granted each (never values)
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a secret; refused while a function is granted it unless --force
    Delete {
        name: String,
        /// Delete even while functions are granted it (they then read no value)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn key_query(key: &str) -> Vec<(&'static str, String)> {
    vec![("key", key.to_string())]
}

pub async fn kv(command: KvCommand) -> anyhow::Result<ExitCode> {
    match command {
        KvCommand::List { bucket, prefix, json, conn } => {
            let api = Api::new(&conn)?;
            let mut req = api.request(Method::GET, &format!("/kv/{bucket}"));
            if let Some(p) = prefix {
                req = req.query(&[("prefix", p)]);
            }
            let reply: serde_json::Value = api.json(req).await?;
            if json {
                print_json(&reply)?;
            } else {
                for k in reply["keys"].as_array().into_iter().flatten() {
                    println!("{}", k.as_str().unwrap_or_default());
                }
            }
        }
        KvCommand::Get { bucket, key, conn } => {
            let api = Api::new(&conn)?;
            let req = api.request(Method::GET, &format!("/kv/{bucket}")).query(&key_query(&key));
            let value = api.send(req).await?.bytes().await.context("reading the value")?;
            std::io::stdout().write_all(&value)?;
        }
        KvCommand::Set { bucket, key, value, from_file, conn } => {
            let api = Api::new(&conn)?;
            let value = match (value, from_file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                (None, None) => read_stdin()?,
            };
            let req = api.request(Method::PUT, &format!("/kv/{bucket}")).query(&key_query(&key)).body(value);
            let reply: serde_json::Value = api.json(req).await?;
            eprintln!("set {bucket}/{key} (revision {})", reply["revision"]);
        }
        KvCommand::Delete { bucket, key, conn } => {
            let api = Api::new(&conn)?;
            let req = api.request(Method::DELETE, &format!("/kv/{bucket}")).query(&key_query(&key));
            let _: serde_json::Value = api.json(req).await?;
            eprintln!("deleted {bucket}/{key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn secret(command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set { name, from_file, conn } => {
            let api = Api::new(&conn)?;
            let mut value = match from_file {
                Some(f) => std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?,
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                        eprintln!("Type the value of {name}, then Ctrl-D:");
                    }
                    read_stdin()?
                }
            };
            // `echo value | tern secret set` and files end in a newline
            // the value does not mean to have.
            if value.ends_with(b"\n") {
                value.pop();
                if value.ends_with(b"\r") {
                    value.pop();
                }
            }
            if value.is_empty() {
                bail!("the value of {name} is empty; give it on stdin or with --from-file");
            }
            let req = api.request(Method::PUT, &format!("/secrets/{name}")).body(value);
            let info: SecretInfo = api.json(req).await?;
            match info.functions.len() {
                0 => eprintln!("secret {name} set; grant it with `tern deploy … --secret {name}`"),
                n => eprintln!(
                    "secret {name} set; {n} function(s) read the new value from their next request: {}",
                    info.functions.join(", ")
                ),
            }
        }
        SecretCommand::List { json, conn } => {
            let api = Api::new(&conn)?;
            let list: Vec<SecretInfo> = api.json(api.request(Method::GET, "/secrets")).await?;
            if json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no secrets (set one with `tern secret set NAME`)");
            } else {
                println!("{:<32} FUNCTIONS", "NAME");
                for s in list {
                    let f = if s.functions.is_empty() { "-".to_string() } else { s.functions.join(", ") };
                    println!("{:<32} {f}", s.name);
                }
            }
        }
        SecretCommand::Delete { name, force, conn } => {
            let api = Api::new(&conn)?;
            let mut req = api.request(Method::DELETE, &format!("/secrets/{name}"));
            if force {
                req = req.query(&[("force", "true")]);
            }
            let info: SecretInfo = api.json(req).await?;
            eprintln!("secret {} deleted", info.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
    Ok(buf)
}
