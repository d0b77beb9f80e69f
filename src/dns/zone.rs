//! The answers of our domain, precomputed from [`Records`] on every `set()`
//! so a query is a map lookup and never allocates records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::Records;

/// Every answer, positive or negative, lives 5 s: tasks come and go, and a
/// resolver must not keep a stopped task's address for long.
pub(crate) const TTL: u32 = 5;

/// The records of one owner name. An owner with none of them is an empty
/// non-terminal (e.g. `_tcp.prod.<domain>`): it exists, so it answers NODATA,
/// not NXDOMAIN, which RFC 8020 resolvers would apply to the whole subtree.
#[derive(Default)]
struct Node {
    addrs: Vec<Record>,
    srv: Vec<Record>,
    /// Addresses of the SRV targets, for the additional section: saves the
    /// client a round trip per endpoint.
    srv_glue: Vec<Record>,
}

pub(crate) enum Answer<'a> {
    Records {
        answers: Vec<&'a Record>,
        additionals: Vec<&'a Record>,
    },
    NoData,
    NxDomain,
}

pub(crate) struct Zone {
    origin: LowerName,
    pub(crate) soa: Record,
    nodes: HashMap<LowerName, Node>,
}

/// `web.prod.reconcile.internal` (any case, trailing dot optional) as a
/// lowercase fully qualified name.
pub(crate) fn parse_name(text: &str) -> Option<Name> {
    let text = text.trim().trim_end_matches('.');
    if text.is_empty() {
        return None;
    }
    Name::from_ascii(format!("{text}."))
        .ok()
        .map(|n| n.to_lowercase())
}

/// The per-endpoint host label an SRV target gets: `10-0-0-5`, or the eight
/// uncompressed groups of a v6 address (`fd00-0-0-0-0-0-0-1`) so the label
/// never starts or ends with a dash, which resolvers may reject.
fn host_label(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join("-"),
    }
}

fn addr_record(name: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, rdata)
}

impl Zone {
    pub(crate) fn build(origin: &Name, serial: u32, records: &Records) -> Zone {
        let mut hosts: BTreeMap<Name, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut services: BTreeMap<Name, BTreeSet<(Name, u16)>> = BTreeMap::new();
        for (key, endpoints) in records {
            if endpoints.is_empty() {
                continue;
            }
            let name = match parse_name(key) {
                Some(name) if origin.zone_of(&name) && name != *origin => name,
                _ => {
                    tracing::warn!(name = %key, domain = %origin, "DNS: skipping a name outside the domain");
                    continue;
                }
            };
            // Services live at NAME.CLUSTER.<domain>: the SRV form and the
            // endpoint hosts go beside NAME, under its parent.
            let parent = name.base_name();
            let first = name
                .iter()
                .next()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .unwrap_or_default();
            let srv_alias = parent
                .prepend_label("_tcp")
                .and_then(|n| n.prepend_label(format!("_{first}")));
            let srv_alias = match srv_alias {
                Ok(alias) => Some(alias),
                Err(error) => {
                    tracing::warn!(name = %key, %error, "DNS: no _NAME._tcp form for this name");
                    None
                }
            };
            for endpoint in endpoints {
                hosts.entry(name.clone()).or_default().insert(endpoint.ip);
                let Ok(target) = parent.prepend_label(host_label(endpoint.ip)) else {
                    continue;
                };
                hosts.entry(target.clone()).or_default().insert(endpoint.ip);
                for owner in std::iter::once(&name).chain(srv_alias.as_ref()) {
                    services
                        .entry(owner.clone())
                        .or_default()
                        .insert((target.clone(), endpoint.port));
                }
            }
        }

        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        for (name, ips) in &hosts {
            let node = nodes.entry(LowerName::new(name)).or_default();
            node.addrs = ips.iter().map(|ip| addr_record(name, *ip)).collect();
        }
        for (name, targets) in &services {
            let node = nodes.entry(LowerName::new(name)).or_default();
            for (target, port) in targets {
                let srv = SRV::new(1, 1, *port, target.clone());
                node.srv
                    .push(Record::from_rdata(name.clone(), TTL, RData::SRV(srv)));
            }
            let distinct: BTreeSet<&Name> = targets.iter().map(|(t, _)| t).collect();
            for target in distinct {
                for ip in hosts.get(target).into_iter().flatten() {
                    node.srv_glue.push(addr_record(target, *ip));
                }
            }
        }
        // Empty non-terminals between each owner and the apex.
        let owners: Vec<Name> = hosts.keys().chain(services.keys()).cloned().collect();
        for owner in owners {
            let mut name = owner.base_name();
            while origin.zone_of(&name) && name != *origin {
                nodes.entry(LowerName::new(&name)).or_default();
                name = name.base_name();
            }
        }

        let soa = SOA::new(
            origin.clone(),
            Name::from_ascii("hostmaster")
                .and_then(|h| h.append_domain(origin))
                .unwrap_or_else(|_| origin.clone()),
            serial,
            60,
            10,
            3600,
            TTL,
        );
        Zone {
            origin: LowerName::new(origin),
            soa: Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
            nodes,
        }
    }

    /// The answer to `name`/`rtype`, `name` being inside the zone.
    pub(crate) fn lookup(&self, name: &LowerName, rtype: RecordType) -> Answer<'_> {
        if *name == self.origin {
            return match rtype {
                RecordType::SOA | RecordType::ANY => Answer::Records {
                    answers: vec![&self.soa],
                    additionals: Vec::new(),
                },
                _ => Answer::NoData,
            };
        }
        let Some(node) = self.nodes.get(name) else {
            return Answer::NxDomain;
        };
        let of_type = |t: RecordType| {
            node.addrs
                .iter()
                .filter(move |r| t == RecordType::ANY || r.record_type() == t)
        };
        let (answers, additionals): (Vec<&Record>, Vec<&Record>) = match rtype {
            RecordType::A | RecordType::AAAA => (of_type(rtype).collect(), Vec::new()),
            RecordType::SRV => (node.srv.iter().collect(), node.srv_glue.iter().collect()),
            RecordType::ANY => (
                of_type(RecordType::ANY).chain(&node.srv).collect(),
                Vec::new(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        if answers.is_empty() {
            Answer::NoData
        } else {
            Answer::Records {
                answers,
                additionals,
            }
        }
    }
}
