//! `docs/cli.md`: every command's `--help`, rendered from the clap
//! definitions, so the reference cannot drift from the binary. The test
//! below fails when the file differs from what the code says; to write it
//! again: `TERN_WRITE_DOCS=1 cargo test -p tern-cli reference`.

use clap::CommandFactory;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md");

/// The whole reference: the top-level help, then each command (and each
/// subcommand) in the order `tern --help` lists them.
fn markdown() -> String {
    let mut cli = super::Cli::command();
    cli.build();
    let mut out = String::from(
        "# CLI reference\n\nEvery command's `--help`, generated from the code \
         (`cli/src/reference.rs`; a test fails when this page differs).\n",
    );
    section(&mut out, &mut cli, "tern");
    out
}

fn section(out: &mut String, cmd: &mut clap::Command, path: &str) {
    // The reference names the variables, never this machine's values.
    *cmd = std::mem::take(cmd).mut_args(|a| a.hide_env_values(true));
    let help = cmd.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    out.push_str(&format!("\n## {path}\n\n```text\n{}\n```\n", help.join("\n").trim_end()));
    for sub in cmd.get_subcommands_mut() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let name = format!("{path} {}", sub.get_name());
        section(out, sub, &name);
    }
}

#[test]
fn the_cli_reference_matches_the_code() {
    let want = markdown();
    if std::env::var_os("TERN_WRITE_DOCS").is_some() {
        std::fs::write(PATH, &want).expect("write docs/cli.md");
        return;
    }
    let have = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli.md differs from the CLI's --help; write it again with \
         `TERN_WRITE_DOCS=1 cargo test -p tern-cli reference`"
    );
}
