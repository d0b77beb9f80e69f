//! `reconcile import compose`: the file side of
//! [`crate::import::compose`]. Finds and reads the compose files, `.env`
//! and `env_file`s as `docker compose` does, then hands the project to the
//! ECS import's writing (all files or none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::import::{print_findings, usage, OutputArgs, EXIT_FAILURE};
use crate::import::compose::{env_file, load, project};
use crate::import::{self, ImportError, Level, Warning};

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Compose files, merged in order as `docker compose -f` merges them.
    /// Default: compose.yaml (or compose.yml, docker-compose.yaml,
    /// docker-compose.yml) in the current directory, with its
    /// `.override` file when there is one.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The project's name, which names the task definition and the
    /// service. Default: COMPOSE_PROJECT_NAME, the files' `name:`, or the
    /// first file's directory.
    #[arg(long, short = 'p', value_name = "NAME")]
    project_name: Option<String>,
    /// Read variables for interpolation from FILE instead of `.env` in
    /// the project directory (repeatable; later files win). The
    /// environment wins over both.
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Include the services of this profile (repeatable; `*` for all).
    /// Default: COMPOSE_PROFILES (comma-separated).
    #[arg(long, value_name = "PROFILE")]
    profile: Vec<String>,
    /// Make a task definition and a service of each compose service,
    /// each scaled on its own, instead of one task for the project. They
    /// then find each other through the fleet's DNS names (node addresses
    /// and host ports) rather than by name and container port, and
    /// `depends_on` orders nothing.
    #[arg(long)]
    task_per_service: bool,
    /// The cluster the services run in. Default: the project's name.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// The default files, as compose looks for them in `dir`.
fn default_files(dir: &Path) -> Vec<PathBuf> {
    for name in [
        "compose.yaml",
        "compose.yml",
        "docker-compose.yaml",
        "docker-compose.yml",
    ] {
        let base = dir.join(name);
        if base.is_file() {
            let (stem, ext) = name.rsplit_once('.').unwrap_or((name, "yaml"));
            let over = dir.join(format!("{stem}.override.{ext}"));
            return if over.is_file() {
                vec![base, over]
            } else {
                vec![base]
            };
        }
    }
    Vec::new()
}

/// A project name as compose accepts one: lowercase letters, digits,
/// `-` and `_`, starting with a letter or digit.
fn project_name(raw: &str) -> Option<String> {
    let name: String = raw
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        .then_some(name)
}

pub(super) fn run(a: ComposeArgs) -> ExitCode {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let files = if a.files.is_empty() {
        let found = default_files(&cwd);
        if found.is_empty() {
            return usage(format!(
                "no compose file given and none found in `{}` (compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml)",
                cwd.display()
            ));
        }
        found
    } else {
        a.files.clone()
    };
    for f in &files {
        if !f.is_file() {
            return usage(format!("`{}` is not a file", f.display()));
        }
    }
    let first = std::fs::canonicalize(&files[0]).unwrap_or_else(|_| files[0].clone());
    let dir = first.parent().map(Path::to_path_buf).unwrap_or(cwd);
    let shell: BTreeMap<String, String> = std::env::vars().collect();

    // Variables: `.env` (or --env-file), under the environment.
    let env_files: Vec<PathBuf> = if a.env_file.is_empty() {
        let default = dir.join(".env");
        if default.is_file() {
            vec![default]
        } else {
            Vec::new()
        }
    } else {
        a.env_file.clone()
    };
    let mut env = BTreeMap::new();
    for f in &env_files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => return usage(format!("--env-file `{}`: {e}", f.display())),
        };
        match env_file::parse(&text, &shell) {
            Ok(vars) => env.extend(vars),
            Err(e) => {
                eprintln!("error: {}:{}: {}", f.display(), e.line, e.message);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }
    env.extend(shell.clone());

    let profiles: BTreeSet<String> = if a.profile.is_empty() {
        shell
            .get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        a.profile.iter().cloned().collect()
    };

    let mut inputs = Vec::new();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => inputs.push(load::File {
                name: f.display().to_string(),
                text,
            }),
            Err(e) => return usage(format!("cannot read `{}`: {e}", f.display())),
        }
    }
    // `extends.file` and `env_file` paths are relative to the project
    // directory.
    let reader = |_: &str, path: &str| -> Result<load::File, String> {
        let p = dir.join(path);
        std::fs::read_to_string(&p)
            .map(|text| load::File {
                name: p.display().to_string(),
                text,
            })
            .map_err(|e| e.to_string())
    };
    let opts = load::Options { env, profiles };
    let read = match load::project(&inputs, &opts, &reader) {
        Ok(p) => p,
        Err(findings) => {
            let errors: Vec<ImportError> = findings
                .into_iter()
                .map(|f| ImportError {
                    file: f.file,
                    line: f.line,
                    column: f.column,
                    path: (!f.path.is_empty()).then_some(f.path),
                    message: f.message,
                    help: None,
                })
                .collect();
            print_findings(a.output.format, &errors, &[], &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let name = a
        .project_name
        .clone()
        .or_else(|| shell.get("COMPOSE_PROJECT_NAME").cloned())
        .or_else(|| {
            read.doc
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
        })
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let Some(name) = project_name(&name) else {
        return usage(format!(
            "`{name}` cannot be a project name: give --project-name with letters, digits, `-` or `_`"
        ));
    };
    let cluster = a.cluster.clone().unwrap_or_else(|| name.clone());
    let first_name = inputs[0].name.clone();
    let assembly = match project::assemble(
        &read.doc,
        &name,
        &cluster,
        &dir.display().to_string(),
        &first_name,
        if a.task_per_service {
            project::Layout::PerService
        } else {
            project::Layout::Project
        },
    ) {
        Ok(x) => x,
        Err(messages) => {
            let errors: Vec<ImportError> = messages
                .into_iter()
                .map(|m| ImportError {
                    file: first_name.clone(),
                    line: None,
                    column: None,
                    path: None,
                    message: m,
                    help: None,
                })
                .collect();
            print_findings(a.output.format, &errors, &[], &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let mut warnings: Vec<Warning> = read
        .warnings
        .into_iter()
        .map(|f| warning(&f.file, &f.message))
        .collect();
    warnings.extend(assembly.warnings.iter().map(|w| warning(&first_name, w)));

    let options = match a.output.options("reconcile import compose") {
        Ok(o) => o,
        Err(code) => return code,
    };
    let mut imported = match import::ecs(&assembly.inputs, &options) {
        Ok(i) => i,
        Err(errors) => {
            print_findings(a.output.format, &errors, &warnings, &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Compose secrets are named, not AWS parameters: what the ECS import
    // says of their origin does not apply (the compose warning says where
    // the values go).
    // Nor does what it says of Cloud Map: the compose warning says how
    // the DNS name differs from compose's names.
    imported
        .warnings
        .retain(|w| !w.message.contains("Parameter Store") && !w.message.contains("Cloud Map"));
    warnings.append(&mut imported.warnings);
    imported.warnings = warnings;
    a.output.finish(&imported)
}

/// `services.web.restart: ...` as a warning on that path.
fn warning(file: &str, text: &str) -> Warning {
    let (paths, message) = match text.split_once(": ") {
        Some((p, m)) if !p.contains(' ') => (vec![p.to_string()], m.to_string()),
        _ => (Vec::new(), text.to_string()),
    };
    Warning {
        level: Level::Warning,
        file: file.to_string(),
        paths,
        message,
        help: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_as_compose_takes_them() {
        assert_eq!(project_name("My Shop!"), Some("myshop".into()));
        assert_eq!(project_name("web_2-prod"), Some("web_2-prod".into()));
        assert_eq!(project_name("-x"), None);
        assert_eq!(project_name(""), None);
    }
}
