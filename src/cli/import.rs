//! `reconcile import ecs`: the file side of [`crate::import`].
//!
//! Reads the inputs and the output directory, runs the (pure) import,
//! prints warnings, and writes the manifests only when the whole import
//! succeeded: files are written under temporary hidden names first and
//! renamed into place at the end, so a failed run leaves no partial
//! output behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use crate::import::{self, Import, ImportError, Input, Level, Options, Warning};
use crate::source;

/// Convert manifests of another system into reconcile manifests.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: ImportSource,
}

#[derive(Debug, Subcommand)]
enum ImportSource {
    /// Convert Amazon ECS task definitions and services (JSON) into
    /// manifests that pass `reconcile validate`.
    ///
    /// Reads RegisterTaskDefinition input, `aws ecs describe-task-definition`
    /// output and `aws ecs describe-services` output. Fields reconcile has
    /// carry over with their ECS names; AWS-only fields (roles, awsvpc, awslogs,
    /// Secrets Manager and SSM references, EFS, load balancers, ...) are dropped
    /// or mapped, each with a warning on stderr naming the input file, the JSON
    /// path of the field, what changed and what to do.
    ///
    /// Without --out, writes one multi-document YAML stream on stdout. With
    /// --out DIR, writes <family>.yaml per task definition,
    /// <service>.service.yaml per service and <cluster>.cluster.yaml per
    /// cluster a service runs in that DIR does not define yet.
    ///
    /// Nothing is written when any input fails. Exit status: 0 imported
    /// (warnings allowed), 1 an input cannot be imported or an output file
    /// exists, 2 usage error (e.g. a missing input file).
    Ecs(EcsArgs),
    /// Convert a Docker Compose project into manifests: one task definition
    /// with a container per compose service and one service running it.
    ///
    /// Reads the files as `docker compose` does: merged in order, `.env`
    /// (or --env-file) and the environment for interpolation, `extends`,
    /// profiles, YAML anchors and merge keys, `env_file`. The services of
    /// the project reach each other by name on the task's network, as on
    /// compose's, and `depends_on` conditions become `dependsOn`. Every
    /// compose field is mapped or named in a warning.
    ///
    /// Nothing is written when anything fails. Exit status as for `import
    /// ecs`.
    Compose(super::import_compose::ComposeArgs),
}

#[derive(Debug, clap::Args)]
struct EcsArgs {
    /// ECS JSON files to import; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Set the image of every container named CONTAINER (repeatable), for
    /// task definitions whose image is filled in by CI.
    #[arg(long = "image", value_name = "CONTAINER=IMAGE")]
    images: Vec<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Where and how every import writes its manifests and findings.
#[derive(Debug, clap::Args)]
pub(super) struct OutputArgs {
    /// Write one file per resource into DIR (created if missing) instead of
    /// printing a YAML stream. The manifests already in DIR are validated
    /// together with the new ones, and clusters DIR defines are reused.
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Overwrite files that already exist in the --out directory.
    #[arg(long, requires = "out")]
    force: bool,
    /// Where editors find the JSON Schemas: the prefix of the
    /// `# yaml-language-server: $schema=<URL_OR_PATH>/<kind>.json` line at
    /// the top of every file. A URL, or a path relative to the written
    /// file; the default fits manifests in a directory next to the one
    /// `reconcile schema --out schemas` writes.
    #[arg(long, value_name = "URL_OR_PATH", default_value = import::DEFAULT_SCHEMA_BASE)]
    schema_base: String,
    /// Format of the warnings and errors on stderr.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(super) format: Format,
}

impl OutputArgs {
    /// Import options for these arguments: the schema base, and the
    /// manifests already in --out, which the import reuses and validates
    /// with.
    pub(super) fn options(&self, command: &'static str) -> Result<Options, ExitCode> {
        let mut options = Options {
            schema_base: self.schema_base.clone(),
            command,
            ..Options::default()
        };
        if let Some(dir) = &self.out {
            if dir.exists() && !dir.is_dir() {
                return Err(usage(format!(
                    "--out `{}` exists and is not a directory",
                    dir.display()
                )));
            }
            if dir.is_dir() {
                match source::read_dir(dir) {
                    Ok(files) => options.existing = files,
                    // A new output directory holds nothing yet.
                    Err(source::SourceError::Empty(_)) => {}
                    Err(e) => return Err(usage(e)),
                }
            }
        }
        Ok(options)
    }

    /// Print the stream or write the files into --out, then the findings
    /// and, for people, a summary.
    pub(super) fn finish(&self, imported: &Import) -> ExitCode {
        let code = write_output(imported, self.out.as_deref(), self.force, self.format);
        if code == ExitCode::SUCCESS && self.format == Format::Text {
            summary(imported, self.out.as_deref());
        }
        code
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum Format {
    /// One finding per line (plus a help line), for people.
    Text,
    /// One JSON object: {"ok", "errors", "warnings", "files"}.
    Json,
}

pub(super) const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Run `reconcile import ...`; returns the process exit status.
pub fn run(args: ImportArgs) -> ExitCode {
    match args.source {
        ImportSource::Ecs(a) => ecs(a),
        ImportSource::Compose(a) => super::import_compose::run(a),
    }
}

pub(super) fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

fn ecs(a: EcsArgs) -> ExitCode {
    let mut images = Vec::new();
    for spec in &a.images {
        match spec.split_once('=') {
            Some((c, i)) if !c.is_empty() && !i.is_empty() => {
                images.push((c.to_string(), i.to_string()))
            }
            _ => return usage(format!("--image `{spec}`: expected CONTAINER=IMAGE")),
        }
    }

    // Every input is read before anything is parsed, so that a typo in one
    // name is reported at once, as a usage error.
    let mut inputs = Vec::new();
    let mut missing = false;
    for path in &a.files {
        match read_input(path) {
            Ok(input) => inputs.push(input),
            Err(message) => {
                eprintln!("error: {message}");
                missing = true;
            }
        }
    }
    if missing {
        return ExitCode::from(EXIT_USAGE);
    }

    let mut options = match a.output.options("reconcile import ecs") {
        Ok(o) => o,
        Err(code) => return code,
    };
    options.images = images;

    let result = import::ecs(&inputs, &options);
    let imported = match result {
        Ok(i) => i,
        Err(errors) => {
            print_findings(a.output.format, &errors, &[], &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    a.output.finish(&imported)
}

/// Print the stream, or write the files into `out`, and the findings.
fn write_output(imported: &Import, out: Option<&Path>, force: bool, format: Format) -> ExitCode {
    let written = match out {
        None => {
            let mut out = std::io::stdout().lock();
            match out
                .write_all(imported.stream().as_bytes())
                .and_then(|_| out.flush())
            {
                Ok(()) => Ok(Vec::new()),
                Err(e) => Err(vec![io_error("<stdout>", &e)]),
            }
        }
        Some(dir) => write_dir(dir, imported, force),
    };
    match written {
        Ok(paths) => {
            print_findings(format, &[], &imported.warnings, &paths);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_findings(format, &errors, &imported.warnings, &[]);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn read_input(path: &Path) -> Result<Input, String> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return Ok(Input {
            name: "<stdin>".into(),
            bytes,
        });
    }
    let name = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("`{name}` does not exist"))
        }
        Err(e) => return Err(format!("cannot read `{name}`: {e}")),
        Ok(m) if m.is_dir() => return Err(format!("`{name}` is a directory; give the JSON files")),
        Ok(m) if m.len() > source::MAX_FILE_BYTES => {
            return Err(format!(
                "`{name}` is larger than the {} MiB limit for an input",
                source::MAX_FILE_BYTES / 1048576
            ))
        }
        Ok(_) => {}
    }
    std::fs::read(path)
        .map(|bytes| Input { name, bytes })
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn io_error(file: &str, e: &std::io::Error) -> ImportError {
    ImportError {
        file: file.to_string(),
        line: None,
        column: None,
        path: None,
        message: format!("cannot write: {e}"),
        help: None,
    }
}

/// Write every file or none: refuse to overwrite unless `force`, write
/// under hidden temporary names (which `reconcile validate` skips), then
/// rename into place.
fn write_dir(dir: &Path, imported: &Import, force: bool) -> Result<Vec<String>, Vec<ImportError>> {
    let targets: Vec<PathBuf> = imported.files.iter().map(|f| dir.join(&f.name)).collect();
    if !force {
        let existing: Vec<ImportError> = targets
            .iter()
            .filter(|p| p.exists())
            .map(|p| ImportError {
                file: p.display().to_string(),
                line: None,
                column: None,
                path: None,
                message: "already exists; refusing to overwrite it".into(),
                help: Some("pass --force to overwrite, or import into another directory".into()),
            })
            .collect();
        if !existing.is_empty() {
            return Err(existing);
        }
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(vec![io_error(&dir.display().to_string(), &e)]);
    }
    let temps: Vec<PathBuf> = imported
        .files
        .iter()
        .map(|f| dir.join(format!(".{}.import-tmp", f.name)))
        .collect();
    let cleanup = |temps: &[PathBuf]| {
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (file, temp) in imported.files.iter().zip(&temps) {
        if let Err(e) = std::fs::write(temp, &file.text) {
            cleanup(&temps);
            return Err(vec![io_error(&temp.display().to_string(), &e)]);
        }
    }
    for (temp, target) in temps.iter().zip(&targets) {
        if let Err(e) = std::fs::rename(temp, target) {
            cleanup(&temps);
            return Err(vec![io_error(&target.display().to_string(), &e)]);
        }
    }
    Ok(targets.iter().map(|p| p.display().to_string()).collect())
}

pub(super) fn print_findings(
    format: Format,
    errors: &[ImportError],
    warnings: &[Warning],
    files: &[String],
) {
    let mut err = std::io::stderr().lock();
    let _ = match format {
        Format::Json => {
            let doc = serde_json::json!({
                "ok": errors.is_empty(),
                "errors": errors,
                "warnings": warnings,
                "files": files,
            });
            writeln!(err, "{doc}")
        }
        Format::Text => {
            let mut text = String::new();
            for w in warnings {
                text.push_str(&w.to_string());
                text.push('\n');
            }
            for e in errors {
                text.push_str("error: ");
                text.push_str(&e.to_string());
                text.push('\n');
            }
            err.write_all(text.as_bytes())
        }
    };
}

fn summary(imported: &Import, out: Option<&Path>) {
    let count = |k: crate::manifest::Kind| imported.files.iter().filter(|f| f.kind == k).count();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let warnings = imported
        .warnings
        .iter()
        .filter(|w| w.level == Level::Warning)
        .count();
    let notes = imported.warnings.len() - warnings;
    let what = [
        plural(
            count(crate::manifest::Kind::TaskDefinition),
            "task definition",
            "task definitions",
        ),
        plural(count(crate::manifest::Kind::Service), "service", "services"),
        plural(count(crate::manifest::Kind::Cluster), "cluster", "clusters"),
    ]
    .join(", ");
    let to = out.map_or_else(String::new, |d| format!(" into {}", d.display()));
    eprintln!(
        "imported {what}{to}; {}, {}",
        plural(warnings, "warning", "warnings"),
        plural(notes, "note", "notes")
    );
}
