//! `reconcile completions SHELL` and `reconcile man`: shell completion
//! scripts and manual pages generated from the same clap definition as
//! `--help`, so they cannot drift from the commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

use super::run::failure;
use super::Cli;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write a completion script for (on standard output).
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write `reconcile.1` and a `reconcile-COMMAND.1` per
    /// command into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn completions_cmd(a: CompletionsArgs) -> ExitCode {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "reconcile", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        // `| head` closing the pipe is not a failure worth a word.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => failure(format!("writing to stdout: {e}")),
    }
}

pub fn man_cmd(a: ManArgs) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(&a.out) {
        return failure(format!("--out `{}`: {e}", a.out.display()));
    }
    let cmd = Cli::command();
    let mut written = 0;
    let mut pages = vec![(
        String::from("reconcile"),
        String::from("reconcile"),
        cmd.clone(),
    )];
    // Every command and subcommand gets its page, `reconcile-node-drain.1`
    // for `reconcile node drain`, as git's do.
    let mut i = 0;
    while i < pages.len() {
        let (name, invoked, c) = pages[i].clone();
        for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("{name}-{}", sub.get_name());
            let invoked = format!("{invoked} {}", sub.get_name());
            let sub = sub.clone().display_name(&page).bin_name(&invoked);
            pages.push((page, invoked, sub));
        }
        i += 1;
    }
    for (name, _, page) in pages {
        let path = a.out.join(format!("{name}.1"));
        let mut buf = Vec::new();
        if let Err(e) = clap_mangen::Man::new(page).render(&mut buf) {
            return failure(format!("rendering {name}.1: {e}"));
        }
        if let Err(e) = std::fs::write(&path, buf) {
            return failure(format!("writing `{}`: {e}", path.display()));
        }
        written += 1;
    }
    eprintln!("wrote {written} manual pages to {}", a.out.display());
    ExitCode::SUCCESS
}
