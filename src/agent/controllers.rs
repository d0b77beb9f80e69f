//! The controllers an agent reports to, and which of them it uses now.

/// The controllers an agent reports to: one, or those sharing a store,
/// of which the agent uses one at a time (the leader, once found).
pub(crate) struct Controllers {
    urls: Vec<String>,
    at: usize,
}

impl Controllers {
    pub(crate) fn new(list: &str) -> Controllers {
        let urls: Vec<String> = list
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        Controllers { urls, at: 0 }
    }

    pub(crate) fn current(&self) -> &str {
        self.urls.get(self.at).map_or("", String::as_str)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.current())
    }

    /// Move to the leader a follower named, if it is one of ours, else to
    /// the next controller; false when there is nowhere else to go (one
    /// controller, or the leader named itself).
    pub(crate) fn move_on(&mut self, leader: Option<&str>) -> bool {
        if self.urls.len() < 2 {
            return false;
        }
        let named = leader
            .map(|l| l.trim_end_matches('/'))
            .and_then(|l| self.urls.iter().position(|u| u == l));
        match named {
            // The leader itself, still opening its state: stay.
            Some(i) if i == self.at => return false,
            Some(i) => self.at = i,
            None => self.at = (self.at + 1) % self.urls.len(),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Controllers;

    #[test]
    fn an_agent_follows_the_named_leader_and_passes_over_the_rest() {
        let mut c = Controllers::new("https://a:7700/, https://b:7700,https://c:7700");
        assert_eq!(c.url("/v1/join"), "https://a:7700/v1/join");
        // A follower names the leader: straight to it.
        assert!(c.move_on(Some("https://c:7700/")));
        assert_eq!(c.current(), "https://c:7700");
        // The leader names itself (still opening its state): stay.
        assert!(!c.move_on(Some("https://c:7700")));
        assert_eq!(c.current(), "https://c:7700");
        // Unreachable, or a leader that is none of ours: the next one.
        assert!(c.move_on(None));
        assert_eq!(c.current(), "https://a:7700");
        assert!(c.move_on(Some("https://elsewhere:7700")));
        assert_eq!(c.current(), "https://b:7700");
        // One controller: nowhere else to go.
        let mut one = Controllers::new("https://a:7700");
        assert!(!one.move_on(None));
        assert_eq!(one.current(), "https://a:7700");
    }
}
