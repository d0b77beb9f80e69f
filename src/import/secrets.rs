//! Rewriting ECS secret references.
//!
//! In ECS, `secrets[].valueFrom` names a value in AWS Secrets Manager or
//! Systems Manager Parameter Store (by ARN, or by parameter name in the
//! task's region). None of those resolve outside AWS. reconcile resolves
//! `env:NAME`, `file:PATH`, or a bare name: a file of that name in the
//! secrets directory (`RECONCILE_SECRETS_DIR`, default `.reconcile/secrets`
//! under the source).
//!
//! The import rewrites every reference to a bare name derived from the AWS
//! one: the value stays outside git, the same indirection as in ECS, the
//! name tells the user which AWS value to copy, and a value used by several
//! containers or tasks is provided once.

use std::collections::{BTreeMap, BTreeSet};

/// Where an ECS secret came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    SecretsManager,
    ParameterStore,
    /// A template placeholder such as `${DB_SECRET_ARN}`.
    Placeholder,
    /// Some other ARN.
    OtherArn,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::SecretsManager => "an AWS Secrets Manager secret",
            Origin::ParameterStore => "an AWS Systems Manager Parameter Store parameter",
            Origin::Placeholder => "a template placeholder",
            Origin::OtherArn => "an AWS resource",
        }
    }
}

/// The names given so far in one import run, so that the same AWS value
/// always gets the same name and different ones never share a name.
#[derive(Debug, Default)]
pub(crate) struct SecretNames {
    by_source: BTreeMap<String, String>,
    taken: BTreeSet<String>,
}

impl SecretNames {
    /// The secrets-directory name for `value_from`, read by the variable
    /// `env_name`.
    pub fn name_for(&mut self, value_from: &str, env_name: &str) -> (Origin, String) {
        let (store, candidate) = classify(value_from, env_name);
        // A placeholder says nothing about which value it stands for (the
        // same `<secret-url>` often stands for a user name and a password),
        // so placeholders are told apart by the variable they fill.
        let source = if store == Origin::Placeholder {
            format!("{value_from}\u{0}{env_name}")
        } else {
            value_from.to_string()
        };
        if let Some(name) = self.by_source.get(&source) {
            return (store, name.clone());
        }
        let mut name = candidate.clone();
        let mut n = 2;
        while self.taken.contains(&name) {
            name = format!("{candidate}-{n}");
            n += 1;
        }
        self.taken.insert(name.clone());
        self.by_source.insert(source, name.clone());
        (store, name)
    }
}

/// Whether a value looks like an unfilled template placeholder:
/// `${X}`, `{{ x }}`, `<x>` or `__X__`.
pub(crate) fn is_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.contains("${")
        || t.contains("{{")
        || (t.contains('<') && t.contains('>'))
        || t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w.len() > 4 && w.starts_with("__") && w.ends_with("__"))
}

fn classify(value_from: &str, env_name: &str) -> (Origin, String) {
    if is_placeholder(value_from) {
        return (Origin::Placeholder, sanitize(env_name, env_name));
    }
    let parts: Vec<&str> = value_from.split(':').collect();
    if parts.len() >= 6 && parts[0] == "arn" {
        match parts[2] {
            // arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON-KEY[:STAGE[:VERSION-ID]]]
            "secretsmanager" => {
                let mut name = parts.get(6).copied().unwrap_or_default().replace('/', ".");
                for extra in parts.iter().skip(7).filter(|p| !p.is_empty()) {
                    name.push('.');
                    name.push_str(extra);
                }
                return (Origin::SecretsManager, sanitize(&name, env_name));
            }
            // arn:aws:ssm:REGION:ACCOUNT:parameter/PATH/NAME
            "ssm" => {
                let rest = parts[5..].join(":");
                let name = rest.strip_prefix("parameter").unwrap_or(&rest);
                return (
                    Origin::ParameterStore,
                    sanitize(&name.replace('/', "."), env_name),
                );
            }
            _ => {
                let last = value_from.rsplit([':', '/']).next().unwrap_or_default();
                return (Origin::OtherArn, sanitize(last, env_name));
            }
        }
    }
    // Not an ARN: ECS reads it as a Parameter Store name in the task's
    // region, `/path/name` or `name`.
    (
        Origin::ParameterStore,
        sanitize(&value_from.replace('/', "."), env_name),
    )
}

/// A file name that is safe in the secrets directory: letters, digits,
/// `.`, `_`, `-`; not hidden (no leading `.`); `fallback` when nothing is
/// left.
fn sanitize(s: &str, fallback: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.trim_start_matches(['.', '_']).chars() {
        // No `..` and no runs of separators.
        if c == '.' && out.ends_with('.') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end_matches('.').to_string();
    if out.is_empty() || out.chars().all(|c| c == '_' || c == '-') {
        if s == fallback {
            return "secret".to_string();
        }
        return sanitize(fallback, fallback);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(v: &str) -> (Origin, String) {
        SecretNames::default().name_for(v, "ENV_NAME")
    }

    #[test]
    fn secrets_manager_arns() {
        assert_eq!(
            name("arn:aws:secretsmanager:us-east-1:123456789012:secret:todo-app-S2oBvg:DB_PASS::"),
            (
                Origin::SecretsManager,
                "todo-app-S2oBvg.DB_PASS".to_string()
            )
        );
        assert_eq!(
            name("arn:aws:secretsmanager:eu-central-1:123456789012:secret:prod/witp/db_uri-MzD5WF"),
            (
                Origin::SecretsManager,
                "prod.witp.db_uri-MzD5WF".to_string()
            )
        );
    }

    #[test]
    fn parameter_store_arns_and_names() {
        assert_eq!(
            name("arn:aws:ssm:ap-northeast-2:123456789012:parameter/interv/db/password"),
            (Origin::ParameterStore, "interv.db.password".to_string())
        );
        assert_eq!(name("/ecs-param/db-host").1, "ecs-param.db-host");
        assert_eq!(name("cfl-db-password").1, "cfl-db-password");
    }

    #[test]
    fn placeholders_use_the_variable_name() {
        assert_eq!(
            name("${JWT_SECRET_ARN}"),
            (Origin::Placeholder, "ENV_NAME".to_string())
        );
        assert_eq!(name("__DATABASE_URL_SECRET_ARN__").0, Origin::Placeholder);
        assert_eq!(name("<secret-url>").0, Origin::Placeholder);
    }

    #[test]
    fn one_placeholder_for_two_variables_gives_two_names() {
        let mut names = SecretNames::default();
        assert_eq!(names.name_for("<secret-url>", "DB_USER").1, "DB_USER");
        assert_eq!(
            names.name_for("<secret-url>", "DB_PASSWORD").1,
            "DB_PASSWORD"
        );
        assert_eq!(names.name_for("<secret-url>", "DB_USER").1, "DB_USER");
    }

    #[test]
    fn same_source_same_name_different_sources_different_names() {
        let mut names = SecretNames::default();
        let a = names.name_for("/app/db", "A").1;
        let b = names.name_for("/app/db", "B").1;
        let c = names.name_for("app.db", "C").1;
        assert_eq!(a, "app.db");
        assert_eq!(a, b);
        assert_eq!(c, "app.db-2");
    }
}
