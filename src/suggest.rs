//! "Did you mean" suggestions for misspelt keys, kinds and names.

/// The candidate closest to `word`, when it is close enough to be a typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            if c.eq_ignore_ascii_case(word) {
                return Some((c, 1.0));
            }
            let score = strsim::jaro_winkler(&lower, &c.to_ascii_lowercase());
            let edits = strsim::levenshtein(&lower, &c.to_ascii_lowercase());
            (score >= 0.85 || edits <= 2.min(c.len() / 3)).then_some((c, score))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_only() {
        let keys = ["desiredCount", "cluster", "taskDefinition"];
        assert_eq!(closest("desiredCont", keys), Some("desiredCount"));
        assert_eq!(closest("desired_count", keys), Some("desiredCount"));
        assert_eq!(closest("Cluster", keys), Some("cluster"));
        assert_eq!(closest("image", keys), None);
    }
}
