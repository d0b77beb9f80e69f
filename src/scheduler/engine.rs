//! [`place`](super::place): feasibility once per call, then incremental
//! ranking structures so each task costs `O(C + log N)`.
//!
//! Why a node's rank can be kept incrementally: during one call only the
//! node a task lands on changes (its resources, ports, group count, running
//! tasks). A node that is infeasible now therefore stays infeasible for the
//! rest of the call, and is dropped for good; every node kept in a structure
//! is feasible for the next task.
//!
//! Ranking keys are of two kinds:
//! - node-level (remaining CPU, remaining memory, tasks of the group on the
//!   node), which change only for the node a task lands on;
//! - bucket-level (`spread(attribute:NAME)`: tasks of the group over all
//!   nodes with the same value), which change for every node of a bucket.
//!
//! Feasible nodes are grouped in *cells*, one per combination of the
//! spread attributes' values. Inside a cell bucket keys are equal, so the
//! full lexicographic order reduces to the node-level keys and a binary heap
//! per cell finds the cell's best node. The best node overall is the best of
//! the cells' best nodes under the full key, found by comparing the few cell
//! heads. The node taken is popped and pushed back with its new key if it
//! still fits.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::diagnose;
use super::provider::Split;
use super::rng::Rng;
use super::{
    Checks, Constraint, Node, NodeStatus, PlaceOptions, Placement, PlacementStrategy, TaskRequest,
    DEFAULT_SPREAD_ATTRIBUTE,
};
use crate::expression::Expr;
use crate::manifest::service::PlacementStrategyType;
use crate::manifest::CapacityProviderStrategyItem;

/// Spread attributes taken into account; more are ignored (ECS allows five
/// strategies in all).
pub(crate) const MAX_ATTRS: usize = 5;
/// Distinct node-level keys: remaining CPU, remaining memory, group count.
const MAX_COMPS: usize = 3;
/// A node's key inside a cell: its node-level keys, then its name rank.
const KEY_LEN: usize = MAX_COMPS + 1;
const MAX_LEVELS: usize = MAX_ATTRS + MAX_COMPS;
/// Full key: one slot per level, then the name rank.
type FullKey = [u32; MAX_LEVELS + 1];

/// A node-level ranking key (smaller ranks first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comp {
    /// binpack(cpu): CPU left after placement.
    FreeCpu,
    /// binpack(memory): memory left after placement.
    FreeMemory,
    /// spread(instanceId): tasks of the group on the node.
    GroupCount,
}

/// One effective strategy, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// spread over `attrs[i]`.
    Bucket(usize),
    /// node-level key `comps[i]`.
    Node(usize),
}

/// The strategies, normalised: duplicates and anything after `random`
/// dropped, `host` read as `instanceId`, a binpack without field as memory;
/// unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ranking<'s> {
    pub attrs: Vec<&'s str>,
    pub comps: Vec<Comp>,
    pub levels: Vec<Level>,
    /// A `random` strategy ends the list: ties left are drawn uniformly.
    pub random: bool,
}

impl<'s> Ranking<'s> {
    pub fn new(strategy: &'s [PlacementStrategy]) -> Ranking<'s> {
        let mut r = Ranking {
            attrs: Vec::new(),
            comps: Vec::new(),
            levels: Vec::new(),
            random: false,
        };
        if strategy.is_empty() {
            r.attr(DEFAULT_SPREAD_ATTRIBUTE);
            r.comp(Comp::GroupCount);
            return r;
        }
        for s in strategy {
            match s.kind {
                PlacementStrategyType::Random => {
                    r.random = true;
                    break;
                }
                PlacementStrategyType::Spread => match s.field.as_deref() {
                    None | Some("instanceId") | Some("host") => r.comp(Comp::GroupCount),
                    Some(f) => {
                        if let Some(a) = f.strip_prefix("attribute:").filter(|a| !a.is_empty()) {
                            r.attr(a);
                        }
                    }
                },
                PlacementStrategyType::Binpack => match s.field.as_deref() {
                    Some("cpu") => r.comp(Comp::FreeCpu),
                    None | Some("memory") => r.comp(Comp::FreeMemory),
                    Some(_) => {}
                },
            }
        }
        r
    }

    fn attr(&mut self, a: &'s str) {
        if !self.attrs.contains(&a) && self.attrs.len() < MAX_ATTRS {
            self.levels.push(Level::Bucket(self.attrs.len()));
            self.attrs.push(a);
        }
    }

    fn comp(&mut self, c: Comp) {
        if !self.comps.contains(&c) {
            self.levels.push(Level::Node(self.comps.len()));
            self.comps.push(c);
        }
    }
}

/// A feasible node inside a cell: its node-level keys and name rank, then
/// its index (ties are impossible: ranks are distinct).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    key: [u32; KEY_LEN],
    idx: u32,
}

/// The feasible nodes of one pool sharing the same spread-attribute values.
struct Cell {
    /// Bucket id per spread attribute.
    buckets: [u32; MAX_ATTRS],
    /// Ordered by node-level keys (all modes but `bag`).
    heap: BinaryHeap<Reverse<Entry>>,
    /// `random` with no node-level key before it: the nodes, in no order.
    bag: Vec<u32>,
}

/// Small interner for attribute values: a linear scan while there are few
/// (zones, pools), a hash map beyond.
struct Interner<'n> {
    few: Vec<Option<&'n str>>,
    many: Option<HashMap<Option<&'n str>, u32>>,
}

impl<'n> Interner<'n> {
    fn new() -> Self {
        Interner {
            few: Vec::new(),
            many: None,
        }
    }

    fn id(&mut self, v: Option<&'n str>) -> u32 {
        if let Some(m) = &mut self.many {
            let next = m.len() as u32;
            return *m.entry(v).or_insert(next);
        }
        if let Some(p) = self.few.iter().position(|x| *x == v) {
            return p as u32;
        }
        self.few.push(v);
        if self.few.len() > 16 {
            self.many = Some(
                self.few
                    .drain(..)
                    .enumerate()
                    .map(|(i, v)| (v, i as u32))
                    .collect(),
            );
            return 16;
        }
        (self.few.len() - 1) as u32
    }

    fn len(&self) -> usize {
        self.many.as_ref().map_or(self.few.len(), HashMap::len)
    }
}

/// Below this many nodes the scan stays on the calling thread.
const PARALLEL_MIN_NODES: usize = 2048;

/// What the scan learned about a node that matters: it is a candidate, or
/// it holds tasks of the group (which spread buckets count).
struct Found<'n> {
    idx: u32,
    /// Its pool, when it is a candidate.
    pool: Option<u32>,
    /// Tasks of the group on it (looked up when spreading by attribute).
    group: u32,
    /// Same, for its own key and distinctInstance (looked up when needed).
    own: u32,
    /// Its value of each spread attribute.
    values: [Option<&'n str>; MAX_ATTRS],
}

/// The per-call pass over the nodes: everything that reads node data
/// (status, provider, resources, ports, the group's count, constraints,
/// attribute values). Independent per node, so it may run on several
/// threads; results come back in node order either way.
struct Scan<'a> {
    req: &'a TaskRequest<'a>,
    checks: &'a Checks<'a>,
    attrs: &'a [&'a str],
    providers: &'a [CapacityProviderStrategyItem],
    all_group: bool,
    node_group: bool,
}

impl Scan<'_> {
    fn run<'n>(&self, nodes: &'n [Node], threads: usize) -> Vec<Found<'n>> {
        if threads <= 1 || nodes.len() < PARALLEL_MIN_NODES {
            return self.part(nodes, 0);
        }
        let chunk = nodes.len().div_ceil(threads);
        std::thread::scope(|s| {
            let rest: Vec<_> = nodes
                .chunks(chunk)
                .enumerate()
                .skip(1)
                .map(|(k, part)| s.spawn(move || self.part(part, k * chunk)))
                .collect();
            let mut out = self.part(&nodes[..chunk], 0);
            for h in rest {
                out.extend(h.join().expect("scan thread panicked"));
            }
            out
        })
    }

    fn part<'n>(&self, nodes: &'n [Node], offset: usize) -> Vec<Found<'n>> {
        let (req, checks) = (self.req, self.checks);
        let mut out = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.status != NodeStatus::Active {
                continue;
            }
            let group = if self.all_group {
                n.group_count(&req.group)
            } else {
                0
            };
            // The node's own count (looked up only once cheap checks pass).
            let mut own = group;
            let pool = if self.providers.is_empty() {
                Some(0)
            } else {
                n.capacity_provider.as_deref().and_then(|p| {
                    self.providers
                        .iter()
                        .position(|it| it.capacity_provider == p)
                })
            };
            let candidate =
                pool.is_some() && n.free_cpu() >= req.cpu && n.free_memory() >= req.memory && {
                    if self.node_group && !self.all_group {
                        own = n.group_count(&req.group);
                    }
                    checks.fits_with(n, req, own) && checks.fixed_ok(n)
                };
            if !candidate && group == 0 {
                continue;
            }
            let mut values = [None; MAX_ATTRS];
            for (v, a) in values.iter_mut().zip(self.attrs) {
                *v = n.attributes.get(*a).map(String::as_str);
            }
            out.push(Found {
                idx: (offset + i) as u32,
                pool: pool.filter(|_| candidate).map(|p| p as u32),
                group,
                own,
                values,
            });
        }
        out
    }
}

/// Where the next task goes: node `idx`, in cell `cell` of pool `pool`,
/// whose key was `before` until then (zeros in bag mode).
#[derive(Debug, Clone, Copy)]
struct Pick {
    pool: usize,
    cell: usize,
    idx: usize,
    before: [u32; KEY_LEN],
}

struct Engine<'r> {
    rk: Ranking<'r>,
    /// `random` with no node-level key: cells keep plain bags.
    bag_mode: bool,
    /// Tasks of the group per spread attribute and bucket, over all ACTIVE
    /// nodes.
    counts: Vec<Vec<u32>>,
    /// Per pool (capacity provider of the strategy, or the whole cluster).
    pools: Vec<Vec<Cell>>,
    /// Name rank per node; `None` when the nodes come sorted by name (the
    /// index is the rank).
    rank: Option<Vec<u32>>,
    /// Bag mode: position of each node in its cell's bag.
    pos: Vec<u32>,
    rng: Rng,
    tied: Vec<(usize, Entry)>,
}

fn full_key(rk: &Ranking, counts: &[Vec<u32>], cell: &Cell, e: Option<&Entry>) -> FullKey {
    let mut k = [0u32; MAX_LEVELS + 1];
    for (slot, level) in k.iter_mut().zip(&rk.levels) {
        *slot = match *level {
            Level::Bucket(a) => counts[a][cell.buckets[a] as usize],
            Level::Node(c) => e.map_or(0, |e| e.key[c]),
        };
    }
    if !rk.random {
        if let Some(e) = e {
            k[rk.levels.len()] = e.key[MAX_COMPS];
        }
    }
    k
}

impl<'r> Engine<'r> {
    /// A node's key in its cell; `g` is its count of the group.
    fn key(&self, n: &Node, idx: usize, g: u32) -> [u32; KEY_LEN] {
        let mut k = [0u32; KEY_LEN];
        for (slot, c) in k.iter_mut().zip(&self.rk.comps) {
            *slot = match c {
                Comp::FreeCpu => n.free_cpu(),
                Comp::FreeMemory => n.free_memory(),
                Comp::GroupCount => g,
            };
        }
        k[MAX_COMPS] = self.rank.as_ref().map_or(idx as u32, |r| r[idx]);
        k
    }

    fn build(
        nodes: &[Node],
        req: &TaskRequest,
        checks: &Checks,
        rk: Ranking<'r>,
        providers: &[CapacityProviderStrategyItem],
        seed: u64,
        threads: usize,
    ) -> Engine<'r> {
        let n_attrs = rk.attrs.len();
        let bag_mode = rk.random && rk.comps.is_empty();
        let rank = if nodes.windows(2).all(|w| w[0].name < w[1].name) {
            None
        } else {
            let mut order: Vec<u32> = (0..nodes.len() as u32).collect();
            order.sort_by(|&a, &b| {
                nodes[a as usize]
                    .name
                    .cmp(&nodes[b as usize].name)
                    .then(a.cmp(&b))
            });
            let mut rank = vec![0u32; nodes.len()];
            for (r, &i) in order.iter().enumerate() {
                rank[i as usize] = r as u32;
            }
            Some(rank)
        };
        let npools = providers.len().max(1);
        let node_group = checks.distinct || rk.comps.contains(&Comp::GroupCount);
        let mut eng = Engine {
            rk,
            bag_mode,
            counts: vec![Vec::new(); n_attrs],
            pools: (0..npools).map(|_| Vec::new()).collect(),
            rank,
            pos: if bag_mode {
                vec![0; nodes.len()]
            } else {
                Vec::new()
            },
            rng: Rng::new(seed),
            tied: Vec::new(),
        };
        // The group's count on every ACTIVE node feeds the spread buckets;
        // without them only candidates need it, and only for some checks.
        let scan = Scan {
            req,
            checks,
            attrs: &eng.rk.attrs,
            providers,
            all_group: n_attrs > 0,
            node_group,
        };
        let found = scan.run(nodes, threads);
        let mut interners: Vec<Interner> = (0..n_attrs).map(|_| Interner::new()).collect();
        // Cell of each combination of bucket ids, per pool: a plain vector
        // indexed by the bucket id with at most one spread attribute.
        let mut cell_index: Vec<HashMap<[u32; MAX_ATTRS], usize>> =
            (0..npools).map(|_| HashMap::new()).collect();
        let mut cell_by_bucket: Vec<Vec<u32>> = (0..npools).map(|_| Vec::new()).collect();
        let mut entries: Vec<Vec<Vec<Reverse<Entry>>>> = (0..npools).map(|_| Vec::new()).collect();

        for f in found {
            let i = f.idx as usize;
            let mut buckets = [0u32; MAX_ATTRS];
            for a in 0..n_attrs {
                let b = interners[a].id(f.values[a]);
                buckets[a] = b;
                if f.group > 0 {
                    let c = &mut eng.counts[a];
                    if c.len() <= b as usize {
                        c.resize(b as usize + 1, 0);
                    }
                    c[b as usize] += f.group;
                }
            }
            let Some(p) = f.pool else {
                continue;
            };
            let p = p as usize;
            let cells = &mut eng.pools[p];
            let mut new_cell = || {
                cells.push(Cell {
                    buckets,
                    heap: BinaryHeap::new(),
                    bag: Vec::new(),
                });
                entries[p].push(Vec::new());
                cells.len() - 1
            };
            let ci = if n_attrs <= 1 {
                let by = &mut cell_by_bucket[p];
                let b = buckets[0] as usize;
                if by.len() <= b {
                    by.resize(b + 1, u32::MAX);
                }
                if by[b] == u32::MAX {
                    by[b] = new_cell() as u32;
                }
                by[b] as usize
            } else {
                *cell_index[p].entry(buckets).or_insert_with(new_cell)
            };
            if bag_mode {
                let bag = &mut eng.pools[p][ci].bag;
                eng.pos[i] = bag.len() as u32;
                bag.push(i as u32);
            } else {
                let key = eng.key(&nodes[i], i, f.own);
                entries[p][ci].push(Reverse(Entry { key, idx: i as u32 }));
            }
        }
        for (a, c) in eng.counts.iter_mut().enumerate() {
            c.resize(interners[a].len().max(c.len()), 0);
        }
        for (cells, es) in eng.pools.iter_mut().zip(entries) {
            for (cell, e) in cells.iter_mut().zip(es) {
                cell.heap = BinaryHeap::from(e);
            }
        }
        eng
    }

    /// The node for the next task in pool `p`. In heap mode the node is
    /// taken out of its heap (see [`Engine::landed`]).
    fn select(&mut self, p: usize) -> Option<Pick> {
        let Engine {
            rk,
            bag_mode,
            counts,
            pools,
            rng,
            tied,
            ..
        } = self;
        let cells = &mut pools[p];
        let head = |cell: &Cell| -> Option<FullKey> {
            if *bag_mode {
                (!cell.bag.is_empty()).then(|| full_key(rk, counts, cell, None))
            } else {
                cell.heap
                    .peek()
                    .map(|Reverse(e)| full_key(rk, counts, cell, Some(e)))
            }
        };
        let mut best: Option<(usize, FullKey)> = None;
        for (ci, cell) in cells.iter().enumerate() {
            if let Some(k) = head(cell) {
                if best.as_ref().is_none_or(|(_, b)| k < *b) {
                    best = Some((ci, k));
                }
            }
        }
        let (best_cell, best_key) = best?;
        if !rk.random {
            let Reverse(e) = cells[best_cell].heap.pop().expect("head exists");
            return Some(Pick {
                pool: p,
                cell: best_cell,
                idx: e.idx as usize,
                before: e.key,
            });
        }
        if *bag_mode {
            let total: usize = cells
                .iter()
                .filter(|c| head(c) == Some(best_key))
                .map(|c| c.bag.len())
                .sum();
            let mut r = rng.below(total);
            for (ci, cell) in cells.iter().enumerate() {
                if head(cell) == Some(best_key) {
                    if r < cell.bag.len() {
                        return Some(Pick {
                            pool: p,
                            cell: ci,
                            idx: cell.bag[r] as usize,
                            before: [0; KEY_LEN],
                        });
                    }
                    r -= cell.bag.len();
                }
            }
            unreachable!("r < total");
        }
        // random after node-level keys: gather every node tied with the best
        // on all keys before `random`, draw one, put the others back.
        let ncomps = rk.comps.len();
        tied.clear();
        for (ci, cell) in cells.iter_mut().enumerate() {
            if head(cell) != Some(best_key) {
                continue;
            }
            let heap = &mut cell.heap;
            let prefix = heap.peek().expect("head exists").0.key;
            while let Some(Reverse(e)) = heap.peek() {
                if e.key[..ncomps] != prefix[..ncomps] {
                    break;
                }
                let Reverse(e) = heap.pop().expect("peeked");
                tied.push((ci, e));
            }
        }
        let (ci, chosen) = tied.swap_remove(rng.below(tied.len()));
        for (c, e) in tied.drain(..) {
            cells[c].heap.push(Reverse(e));
        }
        Some(Pick {
            pool: p,
            cell: ci,
            idx: chosen.idx as usize,
            before: chosen.key,
        })
    }

    /// Account for a task that just landed where `pick` says: bucket
    /// counts, and the node's place in its cell.
    fn landed(&mut self, nodes: &[Node], pick: Pick, req: &TaskRequest, checks: &Checks) {
        let Pick {
            pool: p,
            cell: ci,
            idx,
            before,
        } = pick;
        let n = &nodes[idx];
        let cell = &self.pools[p][ci];
        for (a, counts) in self.counts.iter_mut().enumerate() {
            counts[cell.buckets[a] as usize] += 1;
        }
        // The node's count of the group now, without a lookup: one more than
        // its key held when spreading by instance; otherwise at least 1,
        // which is all distinctInstance reads (and nothing else reads it).
        let g = match self.rk.comps.iter().position(|c| *c == Comp::GroupCount) {
            Some(c) => before[c] + 1,
            None => 1,
        };
        let fits = checks.fits_with(n, req, g);
        if self.bag_mode {
            if !fits {
                let at = self.pos[idx] as usize;
                let bag = &mut self.pools[p][ci].bag;
                bag.swap_remove(at);
                if let Some(&moved) = bag.get(at) {
                    self.pos[moved as usize] = at as u32;
                }
            }
        } else if fits {
            let key = self.key(n, idx, g);
            self.pools[p][ci].heap.push(Reverse(Entry {
                key,
                idx: idx as u32,
            }));
        }
    }
}

pub(crate) fn place(
    nodes: &mut [Node],
    req: &TaskRequest,
    count: u32,
    already_placed: &BTreeMap<String, u32>,
    seed: u64,
    options: PlaceOptions,
) -> Placement {
    let mut out = Placement {
        assignments: Vec::with_capacity(count as usize),
        failure: None,
    };
    if count == 0 {
        return out;
    }
    let checks = Checks::new(req.constraints);
    let providers = req.capacity_provider_strategy;
    let mut engine = Engine::build(
        nodes,
        req,
        &checks,
        Ranking::new(req.strategy),
        providers,
        seed,
        options.threads,
    );
    let mut split = Split::new(providers, already_placed);
    // (pool, unplaced tasks); `None` = beyond the bases with no weight.
    let mut failed: Vec<(Option<usize>, u32)> = Vec::new();
    for _ in 0..count {
        let pool = split.next();
        match pool.and_then(|p| engine.select(p)) {
            Some(pick) => {
                nodes[pick.idx].add_task(req);
                engine.landed(nodes, pick, req, &checks);
                out.assignments.push(pick.idx);
            }
            None => match failed.iter_mut().find(|(q, _)| *q == pool) {
                Some((_, k)) => *k += 1,
                None => failed.push((pool, 1)),
            },
        }
    }
    if !failed.is_empty() {
        let exprs: Vec<&Expr> = req
            .constraints
            .iter()
            .filter_map(|c| match c {
                Constraint::MemberOf(e) => Some(e),
                Constraint::DistinctInstance => None,
            })
            .collect();
        let parts = failed
            .into_iter()
            .map(|(pool, k)| match pool {
                None => diagnose::no_weight(k),
                Some(p) => diagnose::pool_failure(
                    nodes,
                    req,
                    providers.get(p).map(|it| it.capacity_provider.as_str()),
                    &exprs,
                    checks.distinct,
                    k,
                ),
            })
            .collect();
        out.failure = diagnose::merge(parts);
    }
    out
}
