//! `reconcile secret set|list|rm --controller URL`: the secrets a fleet's
//! manifests name with a bare `valueFrom: NAME`. A value is read from
//! standard input or a file, never from the command line (where `ps` and
//! shell history would show it), and is never printed back.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use super::args::{Format, RemoteArgs};
use super::remote::Client;
use super::run::{block_on, failure, usage};
use crate::secrets::{check_name, MAX_VALUE};
use crate::wire::SecretInfo;

#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    action: SecretAction,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, clap::Subcommand)]
enum SecretAction {
    /// Set secret NAME to the value on standard input (or in --from-file);
    /// one trailing newline is dropped. Services that read it roll to the
    /// new value.
    Set {
        name: String,
        /// Read the value from FILE instead of standard input.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// The controller's secrets: names and when they were set (never
    /// values).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove secret NAME. Services that still read it cannot be planned
    /// until it is set again.
    Rm { name: String },
}

pub fn secret_cmd(a: SecretArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    match a.action {
        SecretAction::Set { name, from_file } => {
            if let Err(e) = check_name(&name) {
                return usage(e);
            }
            let value = match read_value(from_file.as_ref()) {
                Ok(v) => v,
                Err(e) => return usage(e),
            };
            let path = format!("/v1/secrets/{name}");
            match block_on(client.call_bytes::<serde_json::Value>(
                reqwest::Method::PUT,
                &path,
                value,
            )) {
                Ok(v) => {
                    let what = if v["created"] == true {
                        "created"
                    } else {
                        "updated"
                    };
                    println!("secret {name} {what}");
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            }
        }
        SecretAction::List { format } => {
            match block_on(client.call::<Vec<SecretInfo>>(reqwest::Method::GET, "/v1/secrets")) {
                Ok(list) => {
                    match format {
                        Format::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&list).unwrap_or_default()
                        ),
                        Format::Text => print!("{}", table(&list, crate::clock::unix_now())),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            }
        }
        SecretAction::Rm { name } => {
            if let Err(e) = check_name(&name) {
                return usage(e);
            }
            let path = format!("/v1/secrets/{name}");
            match block_on(client.call::<serde_json::Value>(reqwest::Method::DELETE, &path)) {
                Ok(_) => {
                    println!("secret {name} removed");
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            }
        }
    }
}

/// The value from `file` or standard input, without one trailing newline.
fn read_value(file: Option<&PathBuf>) -> Result<Vec<u8>, String> {
    let (mut input, from): (Box<dyn Read>, String) = match file {
        Some(f) => (
            Box::new(
                std::fs::File::open(f)
                    .map_err(|e| format!("--from-file `{}`: {e}", f.display()))?,
            ),
            format!("--from-file `{}`", f.display()),
        ),
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("Type the value, then Ctrl-D (or pipe it in, or use --from-file):");
            }
            (Box::new(std::io::stdin()), "standard input".to_string())
        }
    };
    let mut bytes = Vec::new();
    input
        .by_ref()
        .take(MAX_VALUE as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{from}: {e}"))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() > MAX_VALUE {
        return Err(format!(
            "{from}: a secret value is at most {} KiB",
            MAX_VALUE >> 10
        ));
    }
    if bytes.is_empty() {
        return Err(format!("{from}: the value is empty"));
    }
    Ok(bytes)
}

fn table(list: &[SecretInfo], now: i64) -> String {
    if list.is_empty() {
        return "No secrets.\n".into();
    }
    let width = list.iter().map(|s| s.name.len()).max().unwrap_or(0).max(4);
    let w = crate::clock::readable_width();
    let mut out = format!("{:width$}  {:w$}  UPDATED\n", "NAME", "CREATED");
    for s in list {
        out.push_str(&format!(
            "{:width$}  {:w$}  {}\n",
            s.name,
            crate::clock::readable(s.created, now),
            crate::clock::readable(s.updated, now)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_loses_one_trailing_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v");
        std::fs::write(&f, "pw\n\n").unwrap();
        assert_eq!(read_value(Some(&f)).unwrap(), b"pw\n");
        std::fs::write(&f, "pw\r\n").unwrap();
        assert_eq!(read_value(Some(&f)).unwrap(), b"pw");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_value(Some(&f)).unwrap_err().contains("empty"));
        std::fs::write(&f, vec![b'x'; MAX_VALUE + 1]).unwrap();
        assert!(read_value(Some(&f)).unwrap_err().contains("64 KiB"));
    }
}
