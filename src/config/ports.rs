//! Port lists as people write them: `25,3306,10000-10100` (the syntax of `sidewire init`'s
//! `--skip-*-ports` and of `[[detect.port]] ports`).

use std::fmt;
use std::ops::RangeInclusive;

/// A set of TCP ports, kept as sorted, merged, inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<RangeInclusive<u16>>,
}

impl PortSet {
    /// Parses `LIST`: comma-separated ports (1–65535) and ranges `lo-hi` (lo ≤ hi);
    /// whitespace around items is ignored and an empty string is the empty set.
    ///
    /// Errors: the offending item and why, e.g. `"70000" is not a port (1-65535)`.
    pub fn parse(s: &str) -> Result<PortSet, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let port = |p: &str| -> Result<u16, String> {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{item:?} is not a port (1-65535) or a range lo-hi")),
                }
            };
            let r = match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(format!("{item:?}: the range's start is after its end"));
                    }
                    lo..=hi
                }
                None => {
                    let p = port(item)?;
                    p..=p
                }
            };
            ranges.push(r);
        }
        Ok(PortSet::from_ranges(ranges))
    }

    /// The set of `ranges` (any order, overlaps allowed).
    pub fn from_ranges(mut ranges: Vec<RangeInclusive<u16>>) -> PortSet {
        ranges.sort_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<u16>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(*r.start()) <= u32::from(*last.end()) + 1 => {
                    if r.end() > last.end() {
                        *last = *last.start()..=*r.end();
                    }
                }
                _ => merged.push(r),
            }
        }
        PortSet { ranges: merged }
    }

    /// Whether `port` is in the set (binary search over the ranges).
    pub fn contains(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|r| *r.end() < port);
        self.ranges.get(i).is_some_and(|r| r.contains(&port))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The sorted, merged ranges.
    pub fn ranges(&self) -> &[RangeInclusive<u16>] {
        &self.ranges
    }

    /// The first port in both sets, if any.
    pub fn first_common(&self, other: &PortSet) -> Option<u16> {
        self.ranges.iter().find_map(|a| {
            other.ranges.iter().find_map(|b| {
                let lo = (*a.start()).max(*b.start());
                (lo <= (*a.end()).min(*b.end())).then_some(lo)
            })
        })
    }
}

impl fmt::Display for PortSet {
    /// The canonical list: `25, 3306, 10000-10100` without spaces (`25,3306,10000-10100`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges_and_merges() {
        let s = PortSet::parse(" 3306, 25,10000-10100,10050-10200, 26 ").unwrap();
        assert_eq!(s.to_string(), "25-26,3306,10000-10200");
        for p in [25, 26, 3306, 10000, 10150, 10200] {
            assert!(s.contains(p), "{p}");
        }
        for p in [1, 24, 27, 3305, 9999, 10201, 65535] {
            assert!(!s.contains(p), "{p}");
        }
        assert!(PortSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_items_naming_them() {
        for (bad, what) in [
            ("0", "\"0\""),
            ("70000", "\"70000\""),
            ("25,x", "\"x\""),
            ("100-10", "start is after"),
            ("1-", "\"1-\""),
        ] {
            let e = PortSet::parse(bad).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn first_common_finds_overlaps() {
        let a = PortSet::parse("25,100-200").unwrap();
        assert_eq!(
            a.first_common(&PortSet::parse("150-300").unwrap()),
            Some(150)
        );
        assert_eq!(a.first_common(&PortSet::parse("26-99,201").unwrap()), None);
    }
}
