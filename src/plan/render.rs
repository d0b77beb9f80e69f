//! Plan rendering for people, in the spirit of Terraform: `+ ~ - -/+`
//! markers, field changes, the task-level consequences, and one closing
//! line. Concise by default; `detail` shows every field and multi-line
//! values as unified diffs (similar).

use std::fmt::Write as _;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use super::{Action, FieldChange, Plan, ResourceChange};
use crate::manifest::Kind;

/// How to render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub colour: bool,
    pub detail: bool,
}

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

struct Painter {
    colour: bool,
}

impl Painter {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    }
}

fn marker(a: Action) -> (&'static str, &'static str) {
    match a {
        Action::Create => ("+", GREEN),
        Action::Update => ("~", YELLOW),
        Action::Delete => ("-", RED),
        Action::Replace => ("-/+", RED),
        Action::NoOp => (" ", DIM),
    }
}

/// A value on one line, shortened unless `full`.
fn short(v: &Value, full: bool) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if full || s.chars().count() <= 72 {
        s
    } else {
        format!("{}…", s.chars().take(71).collect::<String>())
    }
}

fn is_long(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| match v {
        Value::String(s) => s.contains('\n') || s.len() > 72,
        Value::Array(_) | Value::Object(_) => v.to_string().len() > 72,
        _ => false,
    })
}

fn pretty(v: &Option<Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => format!("{s}\n"),
        Some(v) => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

fn field_line(out: &mut String, p: &Painter, f: &FieldChange, detail: bool) {
    let path = if f.path.is_empty() { "(spec)" } else { &f.path };
    match (&f.before, &f.after) {
        (None, Some(a)) => {
            let _ = writeln!(
                out,
                "      {} {path}: {}",
                p.paint(GREEN, "+"),
                short(a, detail)
            );
        }
        (Some(b), None) => {
            let _ = writeln!(
                out,
                "      {} {path}: {}",
                p.paint(RED, "-"),
                short(b, detail)
            );
        }
        (Some(b), Some(a)) => {
            if detail && (is_long(&f.before) || is_long(&f.after)) {
                let _ = writeln!(out, "      {} {path}:", p.paint(YELLOW, "~"));
                let (old, new) = (pretty(&f.before), pretty(&f.after));
                let diff = TextDiff::from_lines(&old, &new);
                for change in diff.iter_all_changes() {
                    let (sign, code) = match change.tag() {
                        ChangeTag::Delete => ("-", RED),
                        ChangeTag::Insert => ("+", GREEN),
                        ChangeTag::Equal => (" ", ""),
                    };
                    let line = format!("{sign} {}", change.value().trim_end_matches('\n'));
                    let _ = writeln!(
                        out,
                        "          {}",
                        if code.is_empty() {
                            line
                        } else {
                            p.paint(code, &line)
                        }
                    );
                }
            } else {
                let _ = writeln!(
                    out,
                    "      {} {path}: {} -> {}",
                    p.paint(YELLOW, "~"),
                    short(b, detail),
                    short(a, detail)
                );
            }
        }
        (None, None) => {}
    }
}

fn title(c: &ResourceChange) -> String {
    let mut t = match &c.cluster {
        Some(cl) => format!("{} {cl}/{}", c.kind, c.name),
        None => format!("{} {}", c.kind, c.name),
    };
    if let Some(r) = &c.revision {
        match (c.action, r.from) {
            (Action::Create, _) => t.push_str(&format!(" ({}:{})", c.name, r.to)),
            (Action::Update, Some(f)) => {
                t.push_str(&format!(" ({}:{f} -> {}:{})", c.name, c.name, r.to))
            }
            _ => {}
        }
    }
    t
}

fn resource(out: &mut String, p: &Painter, c: &ResourceChange, style: Style) {
    let (m, code) = marker(c.action);
    let _ = writeln!(
        out,
        "  {}",
        p.paint(DIM, &format!("# {}: {}", title(c), c.reasons.join("; ")))
    );
    let _ = writeln!(out, "  {} {}", p.paint(code, m), p.paint(BOLD, &title(c)));
    let show_fields = match c.action {
        Action::Create => style.detail,
        Action::Delete | Action::NoOp => false,
        Action::Update | Action::Replace => true,
    };
    if show_fields {
        for f in &c.fields {
            field_line(out, p, f, style.detail);
        }
    } else if c.action == Action::Create {
        // The few facts a reader checks on a new service or schedule.
        let facts: &[&str] = match c.kind {
            Kind::Service => &["desiredCount", "taskDefinition", "schedulingStrategy"],
            Kind::ScheduledTask => &["cluster", "taskDefinition", "schedule", "count"],
            _ => &[],
        };
        for f in c.fields.iter().filter(|f| facts.contains(&f.path.as_str())) {
            field_line(out, p, f, false);
        }
    }
    if let Some(t) = &c.tasks {
        let started: u32 = t.start.iter().map(|s| s.count).sum();
        if started > 0 {
            let places: Vec<String> = t
                .start
                .iter()
                .map(|s| {
                    format!(
                        "{} x {}:{} on {}",
                        s.count,
                        family_of(c),
                        s.revision,
                        s.node
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "      {} start {started} task{}: {}",
                p.paint(GREEN, "+"),
                plural(started),
                places.join(", ")
            );
        }
        if !t.stop.is_empty() {
            let n = t.stop.len() as u32;
            let mut reasons: Vec<String> = t.stop.iter().map(|s| s.reason.clone()).collect();
            reasons.dedup();
            let _ = writeln!(
                out,
                "      {} stop {n} task{} ({})",
                p.paint(RED, "-"),
                plural(n),
                reasons.join("; ")
            );
            if style.detail {
                for s in &t.stop {
                    let _ = writeln!(
                        out,
                        "          {} {}:{} on {}: {}",
                        super::short(&s.task),
                        family_of(c),
                        s.revision,
                        s.node,
                        s.reason
                    );
                }
            }
        }
        if !t.cleanup.is_empty() {
            let n = t.cleanup.len() as u32;
            let _ = writeln!(
                out,
                "      {} remove the remains of {n} stopped task{}",
                p.paint(DIM, "x"),
                plural(n)
            );
        }
        if let Some(f) = &t.placement_failure {
            let _ = writeln!(
                out,
                "      {} {} task{} cannot be placed: {}",
                p.paint(RED, "!"),
                f.unplaced,
                plural(f.unplaced),
                f.reason
            );
        }
        if let Some(d) = &t.deployment {
            if d.from_revision.is_some() && !d.steps.is_empty() {
                let family = family_of(c);
                // Within one revision (new secrets, a recreated service, an
                // unfinished rollout) `web:4 -> web:4` would read as a
                // no-op: the header line says why tasks are replaced.
                let what = if d.from_revision == Some(d.to_revision) {
                    format!("to new tasks of {family}:{}", d.to_revision)
                } else {
                    format!(
                        "{family}:{} -> {family}:{}",
                        d.from_revision.unwrap_or(0),
                        d.to_revision
                    )
                };
                let _ = writeln!(
                    out,
                    "      rollout {what}: minimumHealthyPercent {} (keep {} healthy), maximumPercent {} (at most {} running)",
                    d.minimum_healthy_percent,
                    d.bounds.min_healthy,
                    d.maximum_percent,
                    d.bounds.max_running,
                );
                for (i, s) in d.steps.iter().enumerate() {
                    let mut parts = Vec::new();
                    if s.stop_old > 0 {
                        parts.push(format!("stop {} old", s.stop_old));
                    }
                    if s.start_new > 0 {
                        parts.push(format!("start {} new", s.start_new));
                    }
                    let _ = writeln!(out, "        step {}: {}", i + 1, parts.join(", then "));
                }
            }
        }
    }
    out.push('\n');
}

fn family_of(c: &ResourceChange) -> String {
    c.fields
        .iter()
        .find(|f| f.path == "taskDefinition")
        .and_then(|f| f.after.as_ref().or(f.before.as_ref()))
        .and_then(Value::as_str)
        .map(|s| crate::model::TaskDefRef::parse(s).family.to_string())
        .unwrap_or_else(|| c.name.clone())
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The plan as text.
pub fn text(plan: &Plan, style: Style) -> String {
    let p = Painter {
        colour: style.colour,
    };
    let mut out = String::new();
    if !plan.has_changes() {
        out.push_str("No changes. The observed state matches the source.\n");
    } else {
        out.push_str("reconcile will perform the following actions:\n\n");
        for c in plan.changes() {
            resource(&mut out, &p, c, style);
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(out, "{} {w}", p.paint(YELLOW, "warning:"));
    }
    for n in &plan.notes {
        let _ = writeln!(out, "{} {n}", p.paint(DIM, "note:"));
    }
    for e in &plan.errors {
        let _ = writeln!(out, "{} {e}", p.paint(RED, "error:"));
    }
    if plan.has_changes() {
        let s = plan.summary;
        let _ = writeln!(
            out,
            "{}",
            p.paint(
                BOLD,
                &format!(
                    "Plan: {} to add, {} to change, {} to destroy.",
                    s.add, s.change, s.destroy
                )
            )
        );
    }
    out
}

/// The plan as its versioned JSON document.
pub fn json(plan: &Plan) -> Value {
    serde_json::to_value(plan).expect("plans serialise")
}
