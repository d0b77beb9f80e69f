//! Writes a parsed `memberOf` expression back in the cluster query
//! language, for failure messages.

use crate::expression::{Expr, Op, Subject};

pub(crate) fn expression(e: &Expr) -> String {
    let mut out = String::new();
    write(e, &mut out, false);
    out
}

fn write(e: &Expr, out: &mut String, nested: bool) {
    match e {
        Expr::Clause {
            subject, op, args, ..
        } => {
            out.push_str(&subject_text(subject));
            out.push(' ');
            out.push_str(op_text(*op));
            match op {
                Op::Exists | Op::NotExists => {}
                Op::In | Op::NotIn => {
                    out.push_str(" [");
                    for (i, a) in args.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push_str(&value(a));
                    }
                    out.push(']');
                }
                _ => {
                    out.push(' ');
                    out.push_str(&value(args.first().map_or("", String::as_str)));
                }
            }
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            let word = if matches!(e, Expr::And(..)) {
                " and "
            } else {
                " or "
            };
            if nested {
                out.push('(');
            }
            write(a, out, true);
            out.push_str(word);
            write(b, out, true);
            if nested {
                out.push(')');
            }
        }
        Expr::Not(a) => {
            out.push_str("not ");
            write(a, out, true);
        }
    }
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Attribute(n) => format!("attribute:{n}"),
        Subject::InstanceId => "instanceId".into(),
        Subject::AgentConnected => "agentConnected".into(),
        Subject::AgentVersion => "agentVersion".into(),
        Subject::RegisteredAt => "registeredAt".into(),
        Subject::RunningTasksCount => "runningTasksCount".into(),
        Subject::TaskGroup => "task:group".into(),
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "==",
        Op::Ne => "!=",
        Op::Gt => ">",
        Op::Ge => ">=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Exists => "exists",
        Op::NotExists => "!exists",
        Op::In => "in",
        Op::NotIn => "!in",
        Op::Matches => "=~",
        Op::NotMatches => "!~",
    }
}

/// A value, quoted when it would not read back as one word.
fn value(v: &str) -> String {
    let plain = !v.is_empty()
        && !["and", "or", "not"]
            .iter()
            .any(|k| v.eq_ignore_ascii_case(k))
        && !v.chars().any(|c| {
            c.is_whitespace()
                || matches!(
                    c,
                    '(' | ')' | '[' | ']' | ',' | '=' | '!' | '<' | '>' | '"' | '\''
                )
        });
    if plain {
        v.to_string()
    } else if v.contains('"') {
        format!("'{v}'")
    } else {
        format!("\"{v}\"")
    }
}

#[cfg(test)]
mod tests {
    use crate::expression::parse;

    #[test]
    fn round_trips() {
        for src in [
            "attribute:zone in [a, b]",
            "attribute:pool != spot",
            "attribute:gpu exists",
            "not attribute:gpu !exists",
            "(attribute:zone == a or attribute:zone == b) and runningTasksCount < 3",
            "task:group == service:web",
            "attribute:name == \"two words\"",
        ] {
            let e = parse(src).unwrap();
            let text = super::expression(&e);
            assert_eq!(parse(&text).unwrap(), e, "{src} -> {text}");
        }
        assert_eq!(
            super::expression(&parse("attribute:zone in [a,b]").unwrap()),
            "attribute:zone in [a, b]"
        );
    }
}
