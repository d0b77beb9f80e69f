//! `reconcile token create|list|rm`: named API tokens of a controller,
//! each a reader, an operator or a join token, optionally expiring.

use std::process::ExitCode;

use super::args::{Format, RemoteArgs};
use super::remote::Client;
use super::run::{block_on, failure, usage};
use crate::wire::{Accepted, CreatedToken, TokenRequest, TokenRole, TokenView};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    action: TokenAction,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TokenAction {
    /// Make a token and print it (it is shown this once: the controller
    /// keeps only its hash).
    Create {
        name: String,
        /// reader: status, plan, history, nodes. operator: those and every
        /// change. join: only joining nodes.
        #[arg(long, value_enum)]
        role: Role,
        /// Expire after this long: `90s`, `30m`, `12h` or `7d`.
        #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Output format (json prints the token with its details).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// List the named tokens: names, roles, expiry; never the tokens.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Revoke a token: its next request is refused.
    Rm { name: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Role {
    Reader,
    Operator,
    Join,
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds) as seconds.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit (s, m, h, d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("`{s}`: unknown unit `{other}` (use s, m, h or d)")),
    };
    match n.checked_mul(unit) {
        Some(0) => Err("a time to live must be positive".into()),
        Some(t) => Ok(t),
        None => Err(format!("`{s}` is too long")),
    }
}

pub fn token_cmd(a: TokenArgs) -> ExitCode {
    let client = match Client::new(&a.remote) {
        Ok(c) => c,
        Err(c) => return c,
    };
    match a.action {
        TokenAction::Create {
            name,
            role,
            ttl,
            format,
        } => {
            let req = TokenRequest {
                name,
                role: match role {
                    Role::Reader => TokenRole::Reader,
                    Role::Operator => TokenRole::Operator,
                    Role::Join => TokenRole::Join,
                },
                ttl_secs: ttl,
            };
            let created: CreatedToken =
                match block_on(client.call_json(reqwest::Method::POST, "/v1/tokens", &req)) {
                    Ok(t) => t,
                    Err(e) => return failure(e),
                };
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&created).unwrap_or_default()
                ),
                // The token alone on stdout, for `$(reconcile token create ...)`.
                Format::Text => {
                    println!("{}", created.token);
                    let expiry = created
                        .view
                        .expires_at
                        .map(|t| format!(", expires {}", crate::clock::local(t)))
                        .unwrap_or_default();
                    tracing::info!(
                        "token `{}` ({}) created{expiry}; it is not shown again",
                        created.view.name,
                        created.view.role
                    );
                }
            }
            ExitCode::SUCCESS
        }
        TokenAction::List { format } => {
            let tokens: Vec<TokenView> =
                match block_on(client.call(reqwest::Method::GET, "/v1/tokens")) {
                    Ok(t) => t,
                    Err(e) => return failure(e),
                };
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&tokens).unwrap_or_default()
                ),
                Format::Text => print!("{}", table(&tokens, crate::clock::unix_now())),
            }
            ExitCode::SUCCESS
        }
        TokenAction::Rm { name } => {
            if name.contains('/') {
                return usage(format!("token name `{name}` may not contain `/`"));
            }
            match block_on(
                client.call::<Accepted>(reqwest::Method::DELETE, &format!("/v1/tokens/{name}")),
            ) {
                Ok(a) => {
                    println!("{}", a.message);
                    ExitCode::SUCCESS
                }
                Err(e) => failure(e),
            }
        }
    }
}

fn table(tokens: &[TokenView], now: i64) -> String {
    if tokens.is_empty() {
        return "No named tokens (the controller's --api-token and --join-token always work).\n"
            .into();
    }
    let mut out = format!("{:<24} {:<9} {:<22} EXPIRES\n", "NAME", "ROLE", "CREATED");
    for t in tokens {
        let expires = match t.expires_at {
            Some(at) if at <= now => format!("expired {}", crate::clock::local(at)),
            Some(at) => crate::clock::local(at),
            None => "never".into(),
        };
        out.push_str(&format!(
            "{:<24} {:<9} {:<22} {expires}\n",
            t.name,
            t.role.to_string(),
            crate::clock::local(t.created_at)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_to_live_take_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("3w").unwrap_err().contains("unknown unit"));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
    }
}
