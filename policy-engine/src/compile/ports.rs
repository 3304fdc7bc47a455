//! The port phase: for each rule, which transports and ports it accepts, kept per rule.
//!
//! A candidate rule found by the class phases is accepted when its own entry says so: one read
//! of a 16-byte [`PortSpec`], and a binary search only for a rule with several ranges. An earlier
//! design cut the ports into intervals and gave each a bitset over all rules; with 100k rules of
//! distinct ports that was 65 536 bitsets of 100k bits (over 800 MB, built twice while
//! interning). Per-rule entries are linear in the size of the policy, whatever its ports.

use std::collections::HashSet;

use crate::model::{Policy, PortRange, Ports, Protocol, Transport};

const TCP: u8 = 1;
const UDP: u8 = 2;
/// Transports without ports (ICMP and the like).
const OTHER: u8 = 4;

/// What one rule accepts: a set of transports, and for TCP and UDP a port envelope `lo..=hi`,
/// with the exact ranges in [`RulePorts::ranges`] when there are several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct PortSpec {
    lo: u16,
    hi: u16,
    transports: u8,
    ranges_start: u32,
    ranges_len: u32,
}

/// The port specs of all rules, by rule index.
#[derive(Debug, Clone, Default)]
pub(super) struct RulePorts {
    specs: Vec<PortSpec>,
    /// The ranges of rules with more than one, sorted and disjoint per rule.
    ranges: Vec<(u16, u16)>,
    /// Distinct specs (transports and ranges), for the statistics.
    pub(super) distinct: usize,
}

impl RulePorts {
    pub(super) fn new(policy: &Policy) -> RulePorts {
        let mut out = RulePorts::default();
        out.specs.reserve_exact(policy.rules.len());
        let mut shapes: HashSet<(u8, Vec<(u16, u16)>)> = HashSet::new();
        for rule in &policy.rules {
            let spec = out.spec_of(rule.protocol, &rule.ports);
            let shape = match spec.ranges_len {
                0 => vec![(spec.lo, spec.hi)],
                _ => out.ranges_of(&spec).to_vec(),
            };
            shapes.insert((spec.transports, shape));
            out.specs.push(spec);
        }
        out.distinct = shapes.len();
        out.specs.shrink_to_fit();
        out.ranges.shrink_to_fit();
        out
    }

    fn spec_of(&mut self, protocol: Protocol, ports: &Ports) -> PortSpec {
        let transports = match protocol {
            Protocol::Tcp => TCP,
            Protocol::Udp => UDP,
            Protocol::Any => TCP | UDP,
        };
        let ranges = match ports {
            Ports::Any => {
                let other = if protocol == Protocol::Any { OTHER } else { 0 };
                return PortSpec {
                    lo: 0,
                    hi: u16::MAX,
                    transports: transports | other,
                    ..PortSpec::default()
                };
            }
            Ports::Ranges(ranges) => valid_sorted(ranges),
        };
        match ranges.as_slice() {
            // A hand-built rule with no valid range accepts nothing.
            [] => PortSpec::default(),
            [(lo, hi)] => PortSpec {
                lo: *lo,
                hi: *hi,
                transports,
                ..PortSpec::default()
            },
            [(lo, _), .., (_, hi)] => {
                let start = self.ranges.len() as u32;
                self.ranges.extend_from_slice(&ranges);
                PortSpec {
                    lo: *lo,
                    hi: *hi,
                    transports,
                    ranges_start: start,
                    ranges_len: ranges.len() as u32,
                }
            }
        }
    }

    fn ranges_of(&self, spec: &PortSpec) -> &[(u16, u16)] {
        let start = spec.ranges_start as usize;
        self.ranges
            .get(start..start + spec.ranges_len as usize)
            .unwrap_or(&[])
    }

    /// The filter of one query.
    #[inline]
    pub(super) fn query<'a>(
        &'a self,
        transport: Transport,
        port: u16,
        bits: Option<&'a [u64]>,
    ) -> PortFilter<'a> {
        let transport = match transport {
            Transport::Tcp => TCP,
            Transport::Udp => UDP,
            Transport::Other(_) => OTHER,
        };
        PortFilter {
            ports: self,
            bits,
            transport,
            port,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.specs.capacity() * std::mem::size_of::<PortSpec>()
            + self.ranges.capacity() * std::mem::size_of::<(u16, u16)>()
    }
}

/// Ranges with `start <= end`, sorted, overlapping and adjacent ones merged. The loader already
/// gives them so; a hand-built policy may not.
fn valid_sorted(ranges: &[PortRange]) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = ranges
        .iter()
        .filter(|r| r.start <= r.end)
        .map(|r| (r.start, r.end))
        .collect();
    out.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(out.len());
    for (start, end) in out {
        match merged.last_mut() {
            Some(last) if u32::from(start) <= u32::from(last.1) + 1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Whether a rule accepts the transport and port of one query.
#[derive(Debug, Clone, Copy)]
pub(super) struct PortFilter<'a> {
    ports: &'a RulePorts,
    /// The bitset of the query's port class, when the policy has one (see `port_bitsets`):
    /// then one bit answers, and the rule's own entry is not read.
    bits: Option<&'a [u64]>,
    transport: u8,
    port: u16,
}

impl PortFilter<'_> {
    #[inline]
    pub(super) fn accepts(&self, rule: u32) -> bool {
        if let Some(bits) = self.bits {
            return super::tables::bit(bits, rule);
        }
        let Some(spec) = self.ports.specs.get(rule as usize) else {
            return false;
        };
        if spec.transports & self.transport == 0 {
            return false;
        }
        if self.transport == OTHER {
            return true;
        }
        if self.port < spec.lo || self.port > spec.hi {
            return false;
        }
        if spec.ranges_len == 0 {
            return true;
        }
        let ranges = self.ports.ranges_of(spec);
        let i = ranges.partition_point(|&(_, end)| end < self.port);
        ranges.get(i).is_some_and(|&(start, _)| start <= self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, DstSpec, Rule, SrcSpec};

    fn rule(protocol: Protocol, ports: Ports) -> Rule {
        Rule {
            name: "r".into(),
            priority: 0,
            src: SrcSpec::Any,
            dst: DstSpec::Any,
            protocol,
            ports,
            action: Action::Permit,
            log: false,
            watch: false,
            description: None,
        }
    }

    /// Every rule shape, every transport and every port: the filter agrees with the model.
    #[test]
    fn filter_agrees_with_the_model_on_every_port() {
        let r = |start, end| PortRange { start, end };
        let shapes = [
            Ports::Any,
            Ports::Ranges(vec![r(443, 443)]),
            Ports::Ranges(vec![r(1, 1024)]),
            Ports::Ranges(vec![r(80, 80), r(443, 443), r(8000, 8100), r(65535, 65535)]),
            // Unsorted, overlapping and reversed, as only a hand-built policy can be.
            Ports::Ranges(vec![r(9000, 9100), r(50, 40), r(8000, 9050)]),
            Ports::Ranges(vec![r(5, 1)]),
            Ports::Ranges(vec![]),
        ];
        let mut policy = Policy::default();
        for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Any] {
            for ports in &shapes {
                policy.rules.push(rule(protocol, ports.clone()));
            }
        }
        let table = RulePorts::new(&policy);
        let bitsets = super::super::port_bitsets::PortBitsets::new(&policy, 1)
            .expect("a small policy fits the bitsets' budget");
        for transport in [Transport::Tcp, Transport::Udp, Transport::Other(1)] {
            for port in 0..=u16::MAX {
                let filter = table.query(transport, port, None);
                let bits = bitsets.class_bits(transport, port);
                for (i, rule) in policy.rules.iter().enumerate() {
                    let want = rule.protocol.matches(transport)
                        && match &rule.ports {
                            Ports::Any => true,
                            Ports::Ranges(ranges) => {
                                transport.has_ports()
                                    && ranges.iter().any(|r| r.start <= port && port <= r.end)
                            }
                        };
                    assert_eq!(
                        filter.accepts(i as u32),
                        want,
                        "{transport:?} {port} {rule:?}"
                    );
                    assert_eq!(
                        super::super::tables::bit(bits, i as u32),
                        want,
                        "bitsets: {transport:?} {port} {rule:?}"
                    );
                }
            }
        }
        assert!(!table.query(Transport::Tcp, 443, None).accepts(10_000));
    }
}
