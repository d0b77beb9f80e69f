//! The capacity provider split: which provider each new task goes to.
//!
//! Bases first, in strategy order: a provider with `base` B receives tasks
//! until B of the group's tasks run on it (counting those already running).
//! Beyond the bases, each task goes to the weighted provider furthest below
//! its share: with `e_i` tasks beyond base on provider `i` and `k` the number
//! of beyond-base tasks including this one, the provider maximising
//! `k·w_i/W − e_i` (first in strategy order on ties). Over any run of `W`
//! tasks this gives exactly `w_i` to provider `i` (A:1, B:4 → B B A B B),
//! and a provider that fell behind (added later, say) catches up first.
//!
//! A task counts for its provider once assigned, placed or not, so that a
//! provider without room fails its own share instead of pulling every later
//! task onto itself.

use std::collections::BTreeMap;

use crate::manifest::CapacityProviderStrategyItem;

pub(crate) struct Split<'a> {
    items: &'a [CapacityProviderStrategyItem],
    /// Tasks of the group on each provider, including those assigned here.
    placed: Vec<u64>,
}

impl<'a> Split<'a> {
    pub fn new(
        items: &'a [CapacityProviderStrategyItem],
        already: &BTreeMap<String, u32>,
    ) -> Split<'a> {
        let placed = items
            .iter()
            .map(|i| u64::from(already.get(&i.capacity_provider).copied().unwrap_or(0)))
            .collect();
        Split { items, placed }
    }

    /// Provider (index into the strategy) of the next task, or `None` when
    /// the bases are met and no provider has a weight. With an empty
    /// strategy every task goes to "pool" 0 (the whole cluster).
    pub fn next(&mut self) -> Option<usize> {
        if self.items.is_empty() {
            return Some(0);
        }
        let pick = self.choose()?;
        self.placed[pick] += 1;
        Some(pick)
    }

    fn choose(&self) -> Option<usize> {
        if let Some(i) = self
            .items
            .iter()
            .enumerate()
            .find(|(i, it)| self.placed[*i] < u64::from(it.base))
            .map(|(i, _)| i)
        {
            return Some(i);
        }
        let beyond = |i: usize| self.placed[i] - self.placed[i].min(u64::from(self.items[i].base));
        let weighted = || {
            self.items
                .iter()
                .enumerate()
                .filter(|(_, it)| it.weight > 0)
        };
        let total_weight: u64 = weighted().map(|(_, it)| u64::from(it.weight)).sum();
        if total_weight == 0 {
            return None;
        }
        let k: u64 = weighted().map(|(i, _)| beyond(i)).sum::<u64>() + 1;
        let mut best: Option<(usize, i128)> = None;
        for (i, it) in weighted() {
            let deficit = i128::from(k) * i128::from(it.weight)
                - i128::from(beyond(i)) * i128::from(total_weight);
            if best.is_none_or(|(_, d)| deficit > d) {
                best = Some((i, deficit));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, base: u32, weight: u32) -> CapacityProviderStrategyItem {
        CapacityProviderStrategyItem {
            capacity_provider: name.to_string(),
            base,
            weight,
        }
    }

    fn run(items: &[CapacityProviderStrategyItem], already: &[(&str, u32)], n: usize) -> String {
        let already = already.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let mut s = Split::new(items, &already);
        (0..n)
            .map(|_| match s.next() {
                Some(i) => items[i].capacity_provider.clone(),
                None => "-".to_string(),
            })
            .collect::<Vec<_>>()
            .join("")
    }

    #[test]
    fn base_then_one_in_five() {
        let items = [item("A", 2, 1), item("B", 0, 4)];
        assert_eq!(run(&items, &[], 12), "AABBABBBBABB");
    }

    #[test]
    fn already_running_tasks_count_for_base_and_share() {
        let items = [item("A", 2, 1), item("B", 0, 4)];
        // Base met, 1 beyond-base on A and 4 on B: the next five repeat the cycle.
        assert_eq!(run(&items, &[("A", 3), ("B", 4)], 5), "BBABB");
        // A provider that is behind catches up first.
        assert_eq!(run(&items, &[("A", 2), ("B", 0)], 3), "BBA");
        assert_eq!(run(&items, &[("A", 2), ("B", 20)], 3), "AAA");
    }

    #[test]
    fn weight_zero_gets_only_its_base() {
        let items = [item("A", 3, 0), item("B", 0, 1)];
        assert_eq!(run(&items, &[], 6), "AAABBB");
        let none = [item("A", 1, 0)];
        assert_eq!(run(&none, &[], 3), "A--");
    }
}
