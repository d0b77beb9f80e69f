//! `.env` and `env_file` files as compose reads them: `KEY=VALUE` lines,
//! `export ` allowed before the key, `#` comments, single quotes literal,
//! double quotes with escapes (`\n`, `\t`, `\"`, `\\`) and possibly over
//! several lines, unquoted values trimmed and cut at ` #`. Unquoted and
//! double-quoted values are interpolated with what is known so far (the
//! variables given, then the file's own earlier lines), as compose does.
//! A bare `KEY` takes the variable's value when one is given, else it is
//! left out.

use std::collections::BTreeMap;

use super::interpolate::interpolate;

/// A line that cannot be read, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// The variables of `text`, in file order (later lines win), reading
/// references against `known` and the file's own earlier lines.
pub fn parse(
    text: &str,
    known: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut scope = known.clone();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let err = |message: String| EnvFileError {
            line: number,
            message,
        };
        let line = lines[i].trim_start_matches('\u{feff}').trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            if !valid_key(line) {
                return Err(err(format!("`{line}` is neither KEY=VALUE nor a KEY")));
            }
            if let Some(v) = known.get(line) {
                scope.insert(line.to_string(), v.clone());
                out.push((line.to_string(), v.clone()));
            }
            continue;
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err(err(format!(
                "`{key}` is not a variable name (letters, digits, `_`, `.`, `-`, not starting with a digit)"
            )));
        }
        let rest = rest.trim_start();
        let value = if let Some(body) = rest.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_string(),
                None => return Err(err(format!("`{key}`: a single quote is not closed"))),
            }
        } else if let Some(body) = rest.strip_prefix('"') {
            // The value may go on over the next lines until its quote.
            let mut raw = body.to_string();
            loop {
                if let Some(end) = closing_quote(&raw) {
                    raw.truncate(end);
                    break;
                }
                match lines.get(i) {
                    Some(next) => {
                        raw.push('\n');
                        raw.push_str(next);
                        i += 1;
                    }
                    None => return Err(err(format!("`{key}`: a double quote is not closed"))),
                }
            }
            let unescaped = unescape(&raw);
            interpolated(&unescaped, &scope).map_err(err)?
        } else {
            let value = match rest.find(" #") {
                Some(c) => &rest[..c],
                None => rest,
            };
            interpolated(value.trim_end(), &scope).map_err(err)?
        };
        scope.insert(key.to_string(), value.clone());
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn interpolated(text: &str, scope: &BTreeMap<String, String>) -> Result<String, String> {
    interpolate(text, scope)
        .map(|i| i.value)
        .map_err(|e| e.to_string())
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The byte index of the first `"` not escaped by a backslash.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, known: &[(&str, &str)]) -> Vec<(String, String)> {
        let known = known
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(text, &known).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lines_quotes_comments_and_exports() {
        let text = "\u{feff}# settings\n\
                    TAG=1.25\n\
                    export PORT = 8080 # the web port\n\
                    \n\
                    NAME='literal $TAG # kept'\n\
                    GREETING=\"hello\\n\\\"you\\\" at $TAG\"\n\
                    URL=http://host:${PORT}/x#frag\n\
                    EMPTY=\n\
                    TAG=1.26\n";
        assert_eq!(
            read(text, &[]),
            pairs(&[
                ("PORT", "8080"),
                ("NAME", "literal $TAG # kept"),
                ("GREETING", "hello\n\"you\" at 1.25"),
                ("URL", "http://host:8080/x#frag"),
                ("EMPTY", ""),
                ("TAG", "1.26"),
            ])
        );
    }

    #[test]
    fn given_variables_fill_references_and_bare_keys() {
        let text = "DB_URL=postgres://${DB_USER:-app}@db/${DB_NAME}\nHOME_DIR\nMISSING\n";
        assert_eq!(
            read(text, &[("DB_NAME", "shop"), ("HOME_DIR", "/home/a")]),
            pairs(&[
                ("DB_URL", "postgres://app@db/shop"),
                ("HOME_DIR", "/home/a")
            ])
        );
    }

    #[test]
    fn a_double_quoted_value_may_span_lines() {
        let text = "CERT=\"-----BEGIN-----\nabc\n-----END-----\"\nNEXT=1\n";
        assert_eq!(
            read(text, &[]),
            pairs(&[
                ("CERT", "-----BEGIN-----\nabc\n-----END-----"),
                ("NEXT", "1")
            ])
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        let known = BTreeMap::new();
        for (text, line, says) in [
            ("A=1\n9X=2\n", 2, "not a variable name"),
            ("A='open\n", 1, "single quote is not closed"),
            ("A=1\nB=\"open\nstill\n", 2, "double quote is not closed"),
            ("A=1\n\njust words\n", 3, "neither KEY=VALUE nor a KEY"),
            ("A=${REQ:?set REQ}\n", 1, "required variable REQ"),
        ] {
            let e = parse(text, &known).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(says), "{text:?}: {e:?}");
        }
    }
}
