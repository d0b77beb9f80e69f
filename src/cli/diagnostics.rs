//! Rendering validation diagnostics: miette reports with the source snippet
//! for people, one JSON object for programs.

use std::fmt;
use std::io::Write;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde_json::json;

use crate::validate::{Diagnostic, Severity, Validation};

/// A diagnostic in miette's terms, with the file's text for the snippet.
struct Report<'a> {
    d: &'a Diagnostic,
    source: Option<NamedSource<Arc<str>>>,
    /// The diagnostic's span in the shown text.
    span: Option<SourceSpan>,
    /// The span is a tab, shown as `→`.
    at_tab: bool,
    related: Vec<Related>,
}

struct Related {
    message: String,
    source: NamedSource<Arc<str>>,
    span: SourceSpan,
}

impl fmt::Debug for Related {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Display for Related {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Related {}
impl miette::Diagnostic for Related {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.message.clone()),
            self.span,
        ))))
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.d;
        write!(f, "{}", d.message)?;
        if self.source.is_none() {
            write!(f, " ({}:{}:{})", d.file, d.span.line, d.span.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let label = if self.at_tab {
            "a tab (shown as →)".to_string()
        } else if self.d.pointer.is_empty() {
            "here".to_string()
        } else {
            self.d.pointer.clone()
        };
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(label), self.span?),
        )))
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}

/// Whether to use colour on a stream: only on a terminal, never with
/// NO_COLOR set.
pub fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A file's text as shown in snippets, with a span mapped into it. Tabs
/// are invisible in a terminal, and YAML refuses them where they usually
/// hide: they are shown as `→` (so offsets after them move).
fn source_of(
    v: &Validation,
    file: &str,
    span: crate::yaml::Span,
) -> Option<(NamedSource<Arc<str>>, SourceSpan, bool)> {
    let text = v.files.iter().find(|f| f.name == file)?.text.clone()?;
    let end = (span.offset + span.len).min(text.len());
    let at_tab = text[span.offset.min(end)..end].starts_with('\t');
    let (shown, span) = if text.contains('\t') {
        let widen = |s: &str| s.matches('\t').count() * ('→'.len_utf8() - 1);
        let offset = span.offset + text.get(..span.offset).map_or(0, widen);
        let len = span.len + text.get(span.offset..end).map_or(0, widen);
        (
            Arc::from(text.replace('\t', "→")),
            SourceSpan::new(offset.into(), len),
        )
    } else {
        (text, SourceSpan::new(span.offset.into(), span.len))
    };
    Some((
        NamedSource::new(file, shown).with_language("yaml"),
        span,
        at_tab,
    ))
}

/// Write every diagnostic as a miette report, then a summary line.
pub fn write_text(v: &Validation, out: &mut dyn Write, colour: bool) -> std::io::Result<()> {
    let theme = if colour {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_context_lines(2)
        .with_width(100);
    for d in &v.diagnostics {
        let related = d
            .related
            .iter()
            .filter_map(|r| {
                let (source, span, _) = source_of(v, &r.file, r.span)?;
                Some(Related {
                    message: r.message.clone(),
                    source,
                    span,
                })
            })
            .collect();
        let (source, span, at_tab) = match source_of(v, &d.file, d.span) {
            Some((source, span, at_tab)) => (Some(source), Some(span), at_tab),
            None => (None, None, false),
        };
        let report = Report {
            d,
            source,
            span,
            at_tab,
            related,
        };
        let mut s = String::new();
        handler
            .render_report(&mut s, &report)
            .map_err(std::io::Error::other)?;
        writeln!(out, "{s}")?;
    }
    let files = v.files.len();
    let summary = if v.is_valid() {
        let w = v.warnings();
        format!(
            "{} {} valid in {} {}{}",
            v.documents,
            plural(v.documents, "document", "documents"),
            files,
            plural(files, "file", "files"),
            if w > 0 {
                format!(", {w} {}", plural(w, "warning", "warnings"))
            } else {
                String::new()
            }
        )
    } else {
        let (e, w) = (v.errors(), v.warnings());
        format!(
            "{e} {}{} in {} {} ({} {})",
            plural(e, "error", "errors"),
            if w > 0 {
                format!(", {w} {}", plural(w, "warning", "warnings"))
            } else {
                String::new()
            },
            v.documents,
            plural(v.documents, "document", "documents"),
            files,
            plural(files, "file", "files"),
        )
    };
    writeln!(out, "{summary}")
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The machine-readable report: exactly one JSON object.
pub fn to_json(v: &Validation) -> serde_json::Value {
    let diagnostics: Vec<_> = v
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "severity": d.severity,
                "file": d.file,
                "line": d.span.line,
                "column": d.span.column,
                "pointer": d.pointer,
                "kind": d.kind.map(|k| k.as_str()),
                "name": d.name,
                "message": d.message,
                "code": d.code,
                "help": d.help,
            })
        })
        .collect();
    json!({
        "valid": v.is_valid(),
        "documents": v.documents,
        "diagnostics": diagnostics,
    })
}
