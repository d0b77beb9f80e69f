//! Variable interpolation in compose files, as the Compose Specification
//! defines it and `docker compose` does it:
//!
//! - `$VAR` and `${VAR}`: the value, or empty (with a warning) when unset;
//! - `${VAR:-default}` / `${VAR-default}`: `default` when unset or empty /
//!   when unset;
//! - `${VAR:?message}` / `${VAR?message}`: an error carrying `message` when
//!   unset or empty / when unset;
//! - `${VAR:+replacement}` / `${VAR+replacement}`: `replacement` when set
//!   and non-empty / when set, else empty;
//! - `$$`: a literal `$`.
//!
//! Defaults, messages and replacements are interpolated themselves, so
//! `${A:-${B:-x}}` nests. Pure: the variables come in as a map.

use std::collections::BTreeMap;

/// What interpolating one string found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${VAR:?message}` or `${VAR?message}` with VAR missing: the
    /// required variable's name and its message.
    Required { name: String, message: String },
    /// A `${` without its `}`, or a name that is not one.
    Syntax(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is missing a value")
            }
            Problem::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
            Problem::Syntax(s) => f.write_str(s),
        }
    }
}

/// The result of interpolating a string: its value, and the names of the
/// unset variables that became empty (compose warns of each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interpolated {
    pub value: String,
    pub unset: Vec<String>,
}

/// Interpolate `text` with `vars`.
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> Result<Interpolated, Problem> {
    let mut out = Interpolated::default();
    let chars: Vec<char> = text.chars().collect();
    let end = expand(&chars, 0, vars, &mut out, false)?;
    debug_assert_eq!(end, chars.len());
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expand `chars` from `at` into `out.value`; inside a `${...}` operand
/// (`nested`), stop at its closing `}` and return its index, else at the
/// end.
fn expand(
    chars: &[char],
    mut at: usize,
    vars: &BTreeMap<String, String>,
    out: &mut Interpolated,
    nested: bool,
) -> Result<usize, Problem> {
    while at < chars.len() {
        let c = chars[at];
        if nested && c == '}' {
            return Ok(at);
        }
        if c != '$' {
            out.value.push(c);
            at += 1;
            continue;
        }
        match chars.get(at + 1) {
            Some('$') => {
                out.value.push('$');
                at += 2;
            }
            Some('{') => at = braced(chars, at + 2, vars, out)?,
            Some(&n) if is_name_start(n) => {
                let start = at + 1;
                let mut e = start;
                while e < chars.len() && is_name(chars[e]) {
                    e += 1;
                }
                let name: String = chars[start..e].iter().collect();
                match vars.get(&name) {
                    Some(v) => out.value.push_str(v),
                    None => out.unset.push(name),
                }
                at = e;
            }
            // A `$` before anything else stays as it is.
            _ => {
                out.value.push('$');
                at += 1;
            }
        }
    }
    if nested {
        return Err(Problem::Syntax(format!(
            "`${{` without its closing `}}` in `{}`",
            chars.iter().collect::<String>()
        )));
    }
    Ok(at)
}

/// A `${...}` whose name starts at `at`; returns the index after its `}`.
fn braced(
    chars: &[char],
    at: usize,
    vars: &BTreeMap<String, String>,
    out: &mut Interpolated,
) -> Result<usize, Problem> {
    let whole = || chars.iter().collect::<String>();
    let mut e = at;
    while e < chars.len() && is_name(chars[e]) {
        e += 1;
    }
    let name: String = chars[at..e].iter().collect();
    if name.is_empty() || !is_name_start(chars[at]) {
        return Err(Problem::Syntax(format!(
            "`${{` not followed by a variable name in `{}`",
            whole()
        )));
    }
    let value = vars.get(&name);
    // The operator: none, or `-`, `?`, `+`, each with an optional `:`.
    let (colon, op, operand_at) = match (chars.get(e), chars.get(e + 1)) {
        (Some('}'), _) => {
            match value {
                Some(v) => out.value.push_str(v),
                None => out.unset.push(name),
            }
            return Ok(e + 1);
        }
        (Some(':'), Some(&op)) if matches!(op, '-' | '?' | '+') => (true, op, e + 2),
        (Some(&op), _) if matches!(op, '-' | '?' | '+') => (false, op, e + 1),
        _ => {
            return Err(Problem::Syntax(format!(
                "`${{{name}` is followed by neither `}}` nor one of `:-`, `-`, `:?`, `?`, `:+`, `+` in `{}`",
                whole()
            )))
        }
    };
    // `:` makes an empty value count as missing.
    let present = value.is_some_and(|v| !(colon && v.is_empty()));
    // The operand is expanded (it may nest) into its own buffer; it is used
    // or not depending on the operator, but its own unset variables only
    // count when it is used.
    let mut operand = Interpolated::default();
    let close = expand(chars, operand_at, vars, &mut operand, true)?;
    match op {
        '-' if present => out.value.push_str(value.map(String::as_str).unwrap_or("")),
        '-' => {
            out.value.push_str(&operand.value);
            out.unset.extend(operand.unset);
        }
        '?' if present => out.value.push_str(value.map(String::as_str).unwrap_or("")),
        '?' => {
            return Err(Problem::Required {
                name,
                message: operand.value,
            })
        }
        // `+`
        _ if present => {
            out.value.push_str(&operand.value);
            out.unset.extend(operand.unset);
        }
        _ => {}
    }
    Ok(close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(text: &str, v: &BTreeMap<String, String>) -> String {
        interpolate(text, v).unwrap().value
    }

    #[test]
    fn plain_and_braced_variables_and_escapes() {
        let v = vars(&[("TAG", "1.2"), ("EMPTY", "")]);
        assert_eq!(value("nginx:$TAG", &v), "nginx:1.2");
        assert_eq!(value("nginx:${TAG}-alpine", &v), "nginx:1.2-alpine");
        assert_eq!(value("cost: $$5 and $$TAG", &v), "cost: $5 and $TAG");
        assert_eq!(value("a $ b $1", &v), "a $ b $1");
        let r = interpolate("x${MISSING}y$ALSO", &v).unwrap();
        assert_eq!(r.value, "xy");
        assert_eq!(r.unset, ["MISSING", "ALSO"]);
    }

    #[test]
    fn defaults_tell_unset_from_empty() {
        let v = vars(&[("EMPTY", ""), ("SET", "s")]);
        assert_eq!(value("${EMPTY:-d}", &v), "d");
        assert_eq!(value("${EMPTY-d}", &v), "");
        assert_eq!(value("${NONE-d}", &v), "d");
        assert_eq!(value("${SET:-d}", &v), "s");
        assert_eq!(value("${NONE:-}", &v), "");
        // Nested, and a default's own unset variable is reported.
        assert_eq!(value("${NONE:-${SET}x}", &v), "sx");
        let r = interpolate("${NONE:-${ALSO:-${SET}}}", &v).unwrap();
        assert_eq!(r.value, "s");
        assert!(r.unset.is_empty(), "{r:?}");
        let r = interpolate("${SET:-$GONE}", &v).unwrap();
        assert!(r.unset.is_empty(), "an unused default warns of nothing");
    }

    #[test]
    fn required_and_replacement() {
        let v = vars(&[("EMPTY", ""), ("SET", "s")]);
        assert_eq!(
            interpolate("${DB_PASSWORD:?set it in .env}", &v),
            Err(Problem::Required {
                name: "DB_PASSWORD".into(),
                message: "set it in .env".into()
            })
        );
        assert!(interpolate("${EMPTY:?}", &v).is_err());
        assert_eq!(value("${EMPTY?}", &v), "");
        assert_eq!(value("${SET:?no}", &v), "s");
        assert_eq!(value("${SET:+on}", &v), "on");
        assert_eq!(value("${EMPTY:+on}", &v), "");
        assert_eq!(value("${EMPTY+on}", &v), "on");
        assert_eq!(value("${NONE+on}", &v), "");
        let e = interpolate("${X:?}", &v).unwrap_err().to_string();
        assert_eq!(e, "required variable X is missing a value");
    }

    #[test]
    fn malformed_references_are_named() {
        let v = vars(&[]);
        for bad in ["${", "${}", "${1A}", "${A", "${A:-x", "${A*}", "${A:}"] {
            let e = interpolate(bad, &v).unwrap_err();
            assert!(matches!(e, Problem::Syntax(_)), "{bad}: {e:?}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    proptest! {
        /// Text without `$` is itself; `$$` doubles back to `$` whatever
        /// surrounds it.
        #[test]
        fn text_without_references_is_kept(s in "[^$]{0,40}") {
            prop_assert_eq!(value(&s, &vars(&[])), s.clone());
            let doubled = s.replace('x', "$$");
            prop_assert_eq!(value(&doubled, &vars(&[])), s.replace('x', "$"));
        }

        /// A set, non-empty variable reads the same whatever operator and
        /// operand surround it, except `+` which gives the operand.
        #[test]
        fn a_set_variable_wins_over_defaults(
            name in "[A-Z_][A-Z0-9_]{0,8}",
            val in "[a-z0-9]{1,8}",
            operand in "[a-z]{0,6}",
        ) {
            let v = vars(&[(&name, &val)]);
            for op in [":-", "-", ":?", "?"] {
                prop_assert_eq!(value(&format!("${{{name}{op}{operand}}}"), &v), val.clone());
            }
            for op in [":+", "+"] {
                prop_assert_eq!(value(&format!("${{{name}{op}{operand}}}"), &v), operand.clone());
            }
            prop_assert_eq!(value(&format!("${name}"), &v), val.clone());
        }
    }
}
