//! The pure parts of `reconcile logs`: how a task's lines are prefixed
//! when several streams interleave, the cap on a line's length, and the
//! masking of secret values. No I/O: the Docker side lives
//! in `runtime::docker::logs`, the printing in `cli::logs`.

/// Longest line kept, in bytes; the rest is cut (on a char boundary) and
/// marked, so one endless line cannot hold unbounded memory.
pub const MAX_LINE: usize = 16 * 1024;

/// What a line cut at [`MAX_LINE`] ends with.
pub const CUT_MARK: &str = " [line cut]";

/// Secret values shorter than this are not masked: masking `a` or `on`
/// would blank out every line without hiding anything worth hiding.
pub const MIN_MASKED: usize = 4;

/// What replaces a secret value in a line.
pub const MASK: &str = "***";

/// Cut a line to [`MAX_LINE`] bytes on a char boundary, marking the cut.
pub fn cap(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE {
        return line.into();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", &line[..end]).into()
}

/// The secret values a task's lines are masked with: those long enough to
/// be worth masking, longest first so a value containing another is
/// masked whole. Lines are masked one at a time, whole: a value never
/// spans two lines of output.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
}

impl Masker {
    pub fn new<I: IntoIterator<Item = String>>(values: I) -> Masker {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_MASKED)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Masker { values }
    }

    /// `line` with every occurrence of every value replaced by [`MASK`].
    pub fn mask<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out: std::borrow::Cow<'a, str> = line.into();
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK).into();
            }
        }
        out
    }
}

/// The name a task's stream is shown under: `web.1a2b3c4d/app` (service,
/// the first 8 characters of the task id, container); a task without a
/// service by its family.
pub fn stream_name(service_or_family: &str, task_id: &str, container: &str) -> String {
    let short = task_id.get(..8).unwrap_or(task_id);
    format!("{service_or_family}.{short}/{container}")
}

/// A line's prefix: the stream name padded to `width` and a bar, like
/// `docker compose logs`.
pub fn prefix(name: &str, width: usize) -> String {
    format!("{name:<width$} | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_align() {
        let a = stream_name("web", "1a2b3c4d5e6f", "app");
        let b = stream_name("worker", "99887766aabb", "sidecar");
        assert_eq!(a, "web.1a2b3c4d/app");
        let width = a.len().max(b.len());
        assert_eq!(prefix(&b, width), "worker.99887766/sidecar | ");
        assert_eq!(
            prefix(&a, width),
            format!("web.1a2b3c4d/app{} | ", " ".repeat(7))
        );
        assert_eq!(stream_name("web", "abc", "x"), "web.abc/x");
    }

    #[test]
    fn masks_whole_values_in_each_line() {
        let m = Masker::new(["hunter22".to_string(), "abc".into(), "hunter2-long".into()]);
        assert_eq!(m.mask("pw=hunter22 and hunter22"), "pw=*** and ***");
        // The longer value containing the shorter one goes whole.
        assert_eq!(m.mask("x hunter2-long y"), "x *** y");
        // Too short to mask: left alone.
        assert_eq!(m.mask("abc"), "abc");
        // Lines are masked whole: a value split over two lines is two
        // lines, neither containing it, so neither is masked.
        assert_eq!(m.mask("hunt"), "hunt");
        assert_eq!(m.mask("er22"), "er22");
        assert_eq!(Masker::default().mask("hunter22"), "hunter22");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let short = "x".repeat(MAX_LINE);
        assert_eq!(cap(&short), short);
        let long = format!("{}é{}", "x".repeat(MAX_LINE - 1), "y".repeat(10));
        let cut = cap(&long);
        assert!(cut.ends_with(CUT_MARK));
        assert_eq!(cut.len(), MAX_LINE - 1 + CUT_MARK.len());
    }
}
