//! Sets of transports and destination ports, with the arithmetic first-match needs: what is
//! left of a rule's traffic after the earlier rules took theirs.

use std::fmt;

use crate::model::{PortRange, Ports, Protocol};

/// Destination ports of one transport: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PortSet(Vec<(u16, u16)>);

impl PortSet {
    /// Every port (0 included: a rule without `ports` matches whatever the packet says).
    pub fn full() -> PortSet {
        PortSet(vec![(0, u16::MAX)])
    }

    /// The ports of a rule's ranges, merged.
    pub fn from_ranges(ranges: &[PortRange]) -> PortSet {
        let mut v: Vec<(u16, u16)> = ranges.iter().map(|r| (r.start, r.end)).collect();
        v.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
        for (s, e) in v {
            match out.last_mut() {
                Some(last) if u32::from(s) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        PortSet(out)
    }

    /// One port.
    pub fn single(port: u16) -> PortSet {
        PortSet(vec![(port, port)])
    }

    /// No port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every port from 1 up (port 0 does not count: no rule can name it).
    pub fn is_full(&self) -> bool {
        matches!(self.0.first(), Some(&(s, e)) if s <= 1 && e == u16::MAX)
    }

    /// How many ports from 1 to 65535.
    pub fn count(&self) -> u32 {
        self.0
            .iter()
            .map(|&(s, e)| u32::from(e) - u32::from(s.max(1)) + 1)
            .sum::<u32>()
            .min(65535)
    }

    /// The ranges, low to high.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    /// True when some range holds more than one port.
    pub fn has_range(&self) -> bool {
        self.0.iter().any(|&(s, e)| e > s)
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(s, e)| s <= port && port <= e)
    }

    /// The ports of `self` that are not in `other`.
    pub fn minus(&self, other: &PortSet) -> PortSet {
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            let mut start = u32::from(s);
            let end = u32::from(e);
            for &(os, oe) in &other.0 {
                let (os, oe) = (u32::from(os), u32::from(oe));
                if oe < start || os > end {
                    continue;
                }
                if os > start {
                    out.push((start as u16, (os - 1) as u16));
                }
                start = oe + 1;
                if start > end {
                    break;
                }
            }
            if start <= end {
                out.push((start as u16, end as u16));
            }
        }
        PortSet(out)
    }

    /// Whether the two sets share a port.
    pub fn intersects(&self, other: &PortSet) -> bool {
        self.0
            .iter()
            .any(|&(s, e)| other.0.iter().any(|&(os, oe)| os <= e && s <= oe))
    }

    /// The ranges as the policy language writes them: `["443", "8000-8080"]`, or `["any"]`.
    pub fn to_strings(&self) -> Vec<String> {
        if self.is_full() {
            return vec!["any".to_owned()];
        }
        self.0
            .iter()
            .map(|&(s, e)| {
                let s = s.max(1);
                if s == e {
                    s.to_string()
                } else {
                    format!("{s}-{e}")
                }
            })
            .collect()
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(","))
    }
}

/// Traffic by transport and destination port: TCP ports, UDP ports, and whether transports
/// without ports (ICMP, GRE, ...) are included.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Space {
    /// TCP destination ports.
    pub tcp: PortSet,
    /// UDP destination ports.
    pub udp: PortSet,
    /// Transports without ports.
    pub other: bool,
}

impl Space {
    /// What a rule with this `protocol` and `ports` matches.
    pub fn of_rule(protocol: Protocol, ports: &Ports) -> Space {
        let set = match ports {
            Ports::Any => PortSet::full(),
            Ports::Ranges(r) => PortSet::from_ranges(r),
        };
        let empty = PortSet::default();
        match protocol {
            Protocol::Tcp => Space {
                tcp: set,
                udp: empty,
                other: false,
            },
            Protocol::Udp => Space {
                tcp: empty,
                udp: set,
                other: false,
            },
            Protocol::Any => Space {
                tcp: set.clone(),
                udp: set,
                other: matches!(ports, Ports::Any),
            },
        }
    }

    /// Everything.
    pub fn full() -> Space {
        Space::of_rule(Protocol::Any, &Ports::Any)
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && !self.other
    }

    /// `self` without `other`.
    pub fn minus(&self, other: &Space) -> Space {
        Space {
            tcp: self.tcp.minus(&other.tcp),
            udp: self.udp.minus(&other.udp),
            other: self.other && !other.other,
        }
    }

    /// Whether the two share any traffic.
    pub fn intersects(&self, other: &Space) -> bool {
        self.tcp.intersects(&other.tcp)
            || self.udp.intersects(&other.udp)
            || (self.other && other.other)
    }

    /// How much traffic: TCP and UDP ports, plus one for the transports without ports.
    pub fn weight(&self) -> u64 {
        u64::from(self.tcp.count()) + u64::from(self.udp.count()) + u64::from(self.other)
    }

    /// The space as (protocol, ports) pairs the way a rule would say them: `("any", ["any"])`
    /// for everything, `("tcp", ["443"])`, `("any", ["53"])` for the same ports on both, and
    /// `("other", ["any"])` for transports without ports left alone.
    pub fn parts(&self) -> Vec<(&'static str, PortSet)> {
        let mut out = Vec::new();
        if self.other && self.tcp.is_full() && self.udp.is_full() {
            out.push(("any", PortSet::full()));
            return out;
        }
        if !self.tcp.is_empty() && self.tcp == self.udp {
            out.push(("any", self.tcp.clone()));
        } else {
            if !self.tcp.is_empty() {
                out.push(("tcp", self.tcp.clone()));
            }
            if !self.udp.is_empty() {
                out.push(("udp", self.udp.clone()));
            }
        }
        if self.other {
            out.push(("other", PortSet::full()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(r: &[(u16, u16)]) -> PortSet {
        PortSet::from_ranges(
            &r.iter()
                .map(|&(start, end)| PortRange { start, end })
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn subtraction_cuts_ranges() {
        let a = set(&[(1, 100)]);
        assert_eq!(a.minus(&set(&[(10, 20)])), set(&[(1, 9), (21, 100)]));
        assert_eq!(a.minus(&set(&[(1, 100)])), PortSet::default());
        assert_eq!(a.minus(&set(&[(50, 200)])), set(&[(1, 49)]));
        assert_eq!(PortSet::full().minus(&set(&[(443, 443)])).count(), 65534);
        assert_eq!(set(&[(1, 5), (3, 9), (10, 10)]), set(&[(1, 10)]));
    }

    #[test]
    fn spaces_follow_the_rule_language() {
        let tcp443 = Space::of_rule(
            Protocol::Tcp,
            &Ports::Ranges(vec![PortRange {
                start: 443,
                end: 443,
            }]),
        );
        let all = Space::full();
        let left = all.minus(&tcp443);
        assert!(left.other && left.udp.is_full() && !left.tcp.contains(443));
        assert!(tcp443.minus(&all).is_empty());
        assert_eq!(all.parts(), vec![("any", PortSet::full())]);
        assert_eq!(tcp443.parts()[0].1.to_strings(), vec!["443"]);
    }
}
