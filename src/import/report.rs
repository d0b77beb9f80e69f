//! What an import tells the user: warnings about fields that changed or were
//! dropped, and errors that stop the import.
//!
//! Every warning names the input file and the JSON path of the input field it
//! is about (`containerDefinitions[0].logConfiguration`), says what happened
//! and, when the user has something to do, what. Paths use the JSON of the
//! input, not the manifest, because that is what the user has in front of
//! them when they read the warning.

use std::fmt;

use serde::Serialize;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Behaviour changes, or the user has to act (provide a secret, log in
    /// to a registry, ...).
    Warning,
    /// A field was dropped or rewritten without changing what runs; nothing
    /// to do. Still reported so that no input field disappears silently.
    Note,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// A field of the input that was dropped, rewritten or fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub level: Level,
    /// The input file, as the caller named it.
    pub file: String,
    /// JSON paths of the input fields concerned, e.g.
    /// `containerDefinitions[0].logConfiguration`. Usually one; a few
    /// warnings cover several fields dropped for the same reason.
    pub paths: Vec<String>,
    /// What happened.
    pub message: String,
    /// What the user should do, when anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.level.as_str(), self.file)?;
        if !self.paths.is_empty() {
            write!(f, "{}: ", self.paths.join(", "))?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Why an input cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportError {
    /// The input file, as the caller named it (or an output file name when
    /// the produced manifests do not validate).
    pub file: String,
    /// 1-based line and column, for JSON syntax errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// JSON path of the offending input field, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(path) = self.path.as_deref().filter(|p| !p.is_empty()) {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Findings of a whole run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub warnings: Vec<Warning>,
    pub errors: Vec<ImportError>,
}

/// Findings about one input file. Mapping code reports through this and
/// carries on, so that one run shows every problem of every file.
pub(crate) struct Ctx<'r> {
    pub file: String,
    report: &'r mut Report,
}

impl<'r> Ctx<'r> {
    pub fn new(file: &str, report: &'r mut Report) -> Self {
        Ctx {
            file: file.to_string(),
            report,
        }
    }

    /// Errors reported so far, all files included; mapping code compares
    /// counts to tell whether a part of the input failed.
    pub fn error_count(&self) -> usize {
        self.report.errors.len()
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>, help: Option<String>) {
        self.report.errors.push(ImportError {
            file: self.file.clone(),
            line: None,
            column: None,
            path: Some(path.to_string()),
            message: message.into(),
            help,
        });
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>, help: impl Into<String>) {
        self.push(
            Level::Warning,
            vec![path.to_string()],
            message.into(),
            Some(help.into()),
        );
    }

    pub fn warn_many(
        &mut self,
        paths: Vec<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(Level::Warning, paths, message.into(), Some(help.into()));
    }

    pub fn note(&mut self, path: &str, message: impl Into<String>) {
        self.push(Level::Note, vec![path.to_string()], message.into(), None);
    }

    pub fn note_many(&mut self, paths: Vec<String>, message: impl Into<String>) {
        self.push(Level::Note, paths, message.into(), None);
    }

    fn push(&mut self, level: Level, paths: Vec<String>, message: String, help: Option<String>) {
        self.report.warnings.push(Warning {
            level,
            file: self.file.clone(),
            paths,
            message,
            help,
        });
    }
}

/// `parent.key`, or `key` at the root. Keys that are not plain words are
/// written `parent["key"]` so that the path stays unambiguous.
pub(crate) fn key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", serde_json::Value::from(key)),
    }
}

/// `parent[index]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_input() {
        assert_eq!(key("", "family"), "family");
        assert_eq!(key("taskDefinition", "cpu"), "taskDefinition.cpu");
        assert_eq!(
            index(&key("", "containerDefinitions"), 2),
            "containerDefinitions[2]"
        );
        assert_eq!(
            key("dockerLabels", "com.example.app"),
            "dockerLabels[\"com.example.app\"]"
        );
        assert_eq!(key("options", "awslogs-group"), "options.awslogs-group");
    }

    #[test]
    fn warning_text_names_file_path_and_help() {
        let w = Warning {
            level: Level::Warning,
            file: "web.json".into(),
            paths: vec!["containerDefinitions[0].logConfiguration".into()],
            message: "changed".into(),
            help: Some("do this".into()),
        };
        assert_eq!(
            w.to_string(),
            "warning: web.json: containerDefinitions[0].logConfiguration: changed\n  help: do this"
        );
    }
}
