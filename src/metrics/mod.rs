//! Prometheus metrics of the controller (`controller.rs`) and of each agent
//! (`agent.rs`), on the `prometheus-client` crate. This file holds what both
//! share: the exposition format and the short codes label values are made
//! of. Label values come only from finite sets (kinds, actions, outcomes,
//! states, reason codes) or from names of things that exist now, so a
//! registry's size follows the fleet, never the history.

pub mod agent;
pub mod controller;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// What `/metrics` is served as: the classic Prometheus text format, which
/// every Prometheus accepts and `promtool check metrics` lints.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of durations in seconds, from 5 ms to about 80 s.
pub(crate) fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 15)
}

/// A lock's guard; the data behind these locks stays consistent across a
/// panic, so the poison is ignored.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A registry in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut open = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = encode(&mut open, registry);
    classic(&open)
}

/// OpenMetrics text as the classic format: a counter's family is named
/// with its `_total` suffix, and there is no `# EOF` or `# UNIT`.
fn classic(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((p, rest)) => {
                let name = rest.split(' ').next().unwrap_or_default();
                out.push_str(p);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push_str(&rest[name.len()..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The reason code of a placement failure, from the planner's sentence
/// (the sentence itself is free text and never a label).
pub fn placement_reason(sentence: &str) -> &'static str {
    let s = sentence;
    // First: the only phrase that quotes user text (an expression).
    if s.contains("does not match the memberOf constraint") {
        "constraint"
    } else if s.contains("has no nodes") {
        "no_nodes"
    } else if s.contains("weight above 0") {
        "no_weighted_provider"
    } else if s.contains("not ACTIVE") {
        "node_not_active"
    } else if s.contains("agent disconnected") {
        "agent_disconnected"
    } else if s.contains("insufficient CPU") {
        "cpu"
    } else if s.contains("insufficient memory") {
        "memory"
    } else if s.contains("host port") {
        "port"
    } else if s.contains("distinctInstance") {
        "distinct_instance"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_sentences_become_short_codes() {
        let cases = [
            ("the cluster has no nodes", "no_nodes"),
            ("capacity provider `spot` has no nodes", "no_nodes"),
            (
                "no node met all of the task's requirements. The closest matching node `n2` \
                 has insufficient memory available (needs 512 MiB, 256 free).",
                "memory",
            ),
            (
                "... has insufficient CPU units available (needs 9, 1 free)",
                "cpu",
            ),
            ("... already uses host port 80/tcp", "port"),
            (
                "... does not match the memberOf constraint `attribute:port == x`",
                "constraint",
            ),
            (
                "... already runs a task of the group (distinctInstance)",
                "distinct_instance",
            ),
            ("... is DRAINING, not ACTIVE", "node_not_active"),
            ("... has its agent disconnected", "agent_disconnected"),
            ("something new", "other"),
        ];
        for (sentence, code) in cases {
            assert_eq!(placement_reason(sentence), code, "{sentence}");
        }
    }
}
