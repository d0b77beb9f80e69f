//! RFC 6901 JSON pointers: the address every diagnostic, diff and span index
//! uses for a value inside a document.

/// Escape one reference token (`~` -> `~0`, `/` -> `~1`).
pub fn escape(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_string()
    }
}

/// Append a token to a pointer.
pub fn push(pointer: &str, token: &str) -> String {
    let mut p = String::with_capacity(pointer.len() + token.len() + 1);
    p.push_str(pointer);
    p.push('/');
    p.push_str(&escape(token));
    p
}

/// The pointer of the parent value, or None at the root.
pub fn parent(pointer: &str) -> Option<&str> {
    pointer.rfind('/').map(|i| &pointer[..i])
}

/// Unescaped reference tokens of a pointer.
pub fn tokens(pointer: &str) -> impl Iterator<Item = String> + '_ {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_splits() {
        let p = push(&push("", "labels"), "app.io/team~x");
        assert_eq!(p, "/labels/app.io~1team~0x");
        assert_eq!(
            tokens(&p).collect::<Vec<_>>(),
            vec!["labels", "app.io/team~x"]
        );
        assert_eq!(parent(&p), Some("/labels"));
        assert_eq!(parent(""), None);
    }
}
