//! MySQL GTID sets (`3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7-9,uuid2:1-3`): parsing, the
//! normal form MySQL prints, merging, containment, and the SID block of COM_BINLOG_DUMP_GTID.
//!
//! What a MySQL replica with `MASTER_AUTO_POSITION=1` keeps: the set of transactions it has
//! executed, sent to the source so that the source streams exactly the ones missing. squeal keeps
//! the set of transactions whose invalidations Kafka acknowledged (see [`crate::source`]).
//!
//! Normal form, as MySQL prints it: source uuids in ascending order (lowercase, hyphenated); per
//! uuid the untagged intervals first, then each tag (MySQL 8.4 `uuid:tag:n`, lowercase) in
//! ascending order followed by its intervals; intervals ascending, merged when they overlap or
//! touch, a single number written alone (`uuid:1-5:7`). Parsing accepts any order, overlaps,
//! upper case and whitespace (MySQL prints `,\n` between uuids) and yields the normal form.
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use mysql_async::{GnoInterval, Sid};

/// Largest transaction number MySQL assigns (`GNO_END - 1`, with `GNO_END = i64::MAX`).
pub const MAX_GNO: u64 = i64::MAX as u64 - 1;

/// A transaction source: server uuid and tag (empty for untagged GTIDs).
pub type Tsid = ([u8; 16], String);

/// A set of MySQL GTIDs in normal form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidSet {
    /// Per source, intervals `[start, end)` (end exclusive, as MySQL encodes them), ascending,
    /// disjoint and never touching (normal form, so equal sets compare equal).
    sources: BTreeMap<Tsid, Vec<(u64, u64)>>,
}

/// Text that is not a GTID set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MySQL GTID set ({reason}): {text:?}")]
pub struct GtidSetError {
    /// The offending text (a part of the input).
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

pub(crate) fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    let hyphens_ok = text.len() == 32
        || (text.len() == 36 && [8, 13, 18, 23].iter().all(|&i| text.as_bytes()[i] == b'-'));
    if hex.len() != 32 || !hyphens_ok {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        uuid[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(uuid)
}

/// A tag as MySQL accepts it: `[a-z_][a-z0-9_]{0,31}`, case-insensitive (kept lowercase).
fn parse_tag(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let mut chars = lower.chars();
    let first = chars.next()?;
    let ok = (first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && lower.len() <= 32;
    ok.then_some(lower)
}

/// Writes a uuid hyphenated, lowercase.
pub fn format_uuid(uuid: &[u8; 16], f: &mut impl fmt::Write) -> fmt::Result {
    for (i, b) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_char('-')?;
        }
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl GtidSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the set holds no GTID.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Adds `[start, end)` for a source, keeping the normal form. Empty intervals are ignored.
    pub fn insert_interval(&mut self, uuid: [u8; 16], tag: &str, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let list = self
            .sources
            .entry((uuid, tag.to_ascii_lowercase()))
            .or_default();
        // First interval that ends at or after `start` (it may touch or overlap).
        let first = list.partition_point(|&(_, e)| e < start);
        let mut new = (start, end);
        let mut last = first;
        while last < list.len() && list[last].0 <= end {
            new.0 = new.0.min(list[last].0);
            new.1 = new.1.max(list[last].1);
            last += 1;
        }
        list.splice(first..last, [new]);
    }

    /// Adds one GTID.
    pub fn insert(&mut self, uuid: [u8; 16], tag: &str, gno: u64) {
        self.insert_interval(uuid, tag, gno, gno.saturating_add(1));
    }

    /// True when the set holds this GTID.
    pub fn contains(&self, uuid: [u8; 16], tag: &str, gno: u64) -> bool {
        self.sources
            .get(&(uuid, tag.to_ascii_lowercase()))
            .is_some_and(|list| {
                let i = list.partition_point(|&(_, e)| e <= gno);
                i < list.len() && list[i].0 <= gno
            })
    }

    /// Adds every GTID of `other`.
    pub fn union(&mut self, other: &GtidSet) {
        for ((uuid, tag), list) in &other.sources {
            for &(s, e) in list {
                self.insert_interval(*uuid, tag, s, e);
            }
        }
    }

    /// The GTIDs of `self` that `other` lacks.
    pub fn difference(&self, other: &GtidSet) -> GtidSet {
        let mut out = GtidSet::new();
        for (tsid, list) in &self.sources {
            let theirs: &[(u64, u64)] = other.sources.get(tsid).map_or(&[], Vec::as_slice);
            for &(s, e) in list {
                let mut at = s;
                for &(ts, te) in theirs {
                    if te <= at || ts >= e {
                        continue;
                    }
                    if ts > at {
                        out.insert_interval(tsid.0, &tsid.1, at, ts);
                    }
                    at = at.max(te);
                }
                if at < e {
                    out.insert_interval(tsid.0, &tsid.1, at, e);
                }
            }
        }
        out
    }

    /// True when every GTID of `self` is in `other`.
    pub fn is_subset_of(&self, other: &GtidSet) -> bool {
        self.difference(other).is_empty()
    }

    /// Sources and their `[start, end)` intervals, in normal-form order.
    pub fn sources(&self) -> impl Iterator<Item = (&Tsid, &[(u64, u64)])> {
        self.sources.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The SID block of COM_BINLOG_DUMP_GTID (mysql_async's `BinlogStreamRequest::with_gtid_set`).
    ///
    /// Tags that mysql_common refuses cannot occur: the parser and the event decoder accept only
    /// valid ones.
    pub fn to_sids(&self) -> Vec<Sid<'static>> {
        self.sources
            .iter()
            .map(|((uuid, tag), list)| {
                let mut sid = Sid::new(*uuid)
                    .with_intervals(list.iter().map(|&(s, e)| GnoInterval::new(s, e)).collect());
                if !tag.is_empty() {
                    if let Ok(t) = mysql_common::packets::Tag::new(tag.clone()) {
                        sid = sid.with_tag(t);
                    }
                }
                sid
            })
            .collect()
    }
}

impl FromStr for GtidSet {
    type Err = GtidSetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = GtidSet::new();
        for part in text.split(',') {
            let part: String = part.chars().filter(|c| !c.is_whitespace()).collect();
            if part.is_empty() {
                continue; // MySQL accepts "" and stray separators
            }
            let bad = |reason| GtidSetError {
                text: part.clone(),
                reason,
            };
            let mut tokens = part.split(':');
            let uuid = tokens
                .next()
                .and_then(parse_uuid)
                .ok_or_else(|| bad("the source uuid is malformed"))?;
            let mut tag = String::new();
            let mut intervals = 0;
            for token in tokens {
                if token.starts_with(|c: char| c.is_ascii_digit()) {
                    let (a, b) = token.split_once('-').unwrap_or((token, token));
                    let start: u64 = a.parse().map_err(|_| bad("an interval is malformed"))?;
                    let end: u64 = b.parse().map_err(|_| bad("an interval is malformed"))?;
                    if start == 0 || end < start || end > MAX_GNO {
                        return Err(bad("an interval is empty, starts at 0 or is too large"));
                    }
                    set.insert_interval(uuid, &tag, start, end + 1);
                    intervals += 1;
                } else {
                    tag = parse_tag(token).ok_or_else(|| bad("a tag is malformed"))?;
                }
            }
            if intervals == 0 {
                return Err(bad("a source without transactions"));
            }
        }
        Ok(set)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous: Option<&[u8; 16]> = None;
        for ((uuid, tag), list) in &self.sources {
            if previous != Some(uuid) {
                if previous.is_some() {
                    f.write_str(",")?;
                }
                format_uuid(uuid, f)?;
                previous = Some(uuid);
            }
            if !tag.is_empty() {
                write!(f, ":{tag}")?;
            }
            for &(s, e) in list {
                if e - s == 1 {
                    write!(f, ":{s}")?;
                } else {
                    write!(f, ":{s}-{}", e - 1)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "d3a5c9b1-0000-11ee-8000-000000000001";

    fn set(text: &str) -> GtidSet {
        text.parse().unwrap()
    }

    #[test]
    fn parses_into_the_normal_form_mysql_prints() {
        // Unsorted uuids, upper case, overlapping/touching/unordered intervals, MySQL's ",\n".
        let text = format!(
            "{},\n{}:9:1-3:4-5:7-8:2",
            format!("{B}:1-3").to_uppercase(),
            A.to_uppercase()
        );
        assert_eq!(set(&text).to_string(), format!("{A}:1-5:7-9,{B}:1-3"));
        assert_eq!(set("").to_string(), "");
        assert!(set("").is_empty());
        assert_eq!(
            set(&format!("{}:1-2", A.replace('-', ""))).to_string(),
            format!("{A}:1-2"),
            "a uuid without hyphens is accepted"
        );
        // Tags (MySQL 8.4): untagged intervals first, tags ascending, lower case.
        assert_eq!(
            set(&format!("{A}:Zeta:4:alpha:1-2:7,{A}:3")).to_string(),
            format!("{A}:3:alpha:1-2:7:zeta:4")
        );
    }

    #[test]
    fn rejects_what_mysql_rejects() {
        for bad in [
            "x",
            A,
            &format!("{A}:0"),
            &format!("{A}:5-3"),
            &format!("{A}:1-a"),
            &format!("{A}:9223372036854775807"),
            &format!("{A}:9tag:1"),
            &format!("{A}:a-b:1"),
            "3e11fa47-71ca-11e1-9e33-c80aa942956:1",
            "3e11fa4771ca-11e1-9e33-c80aa9429562a:1",
        ] {
            assert!(bad.parse::<GtidSet>().is_err(), "{bad:?} should not parse");
        }
        let e = format!("{A}:0").parse::<GtidSet>().unwrap_err().to_string();
        assert!(e.contains("starts at 0"), "{e}");
    }

    #[test]
    fn insert_merges_and_contains_answers() {
        let uuid = parse_uuid(A).unwrap();
        let mut s = GtidSet::new();
        for gno in [5, 3, 4, 10, 1] {
            s.insert(uuid, "", gno);
        }
        assert_eq!(s.to_string(), format!("{A}:1:3-5:10"));
        s.insert(uuid, "", 2);
        assert_eq!(s.to_string(), format!("{A}:1-5:10"), "2 joins 1 and 3-5");
        assert!(s.contains(uuid, "", 1) && s.contains(uuid, "", 5) && s.contains(uuid, "", 10));
        assert!(!s.contains(uuid, "", 6) && !s.contains(uuid, "", 11));
        assert!(
            !s.contains(uuid, "t", 1),
            "a tagged GTID is another transaction"
        );
        s.insert_interval(uuid, "", 6, 10);
        assert_eq!(s.to_string(), format!("{A}:1-10"));
    }

    #[test]
    fn subset_and_difference() {
        let saved = set(&format!("{A}:1-100,{B}:1-5"));
        assert!(set(&format!("{A}:1-50")).is_subset_of(&saved));
        assert!(GtidSet::new().is_subset_of(&saved));
        let purged = set(&format!("{A}:1-120,{B}:1-3:6"));
        assert!(!purged.is_subset_of(&saved));
        assert_eq!(
            purged.difference(&saved).to_string(),
            format!("{A}:101-120,{B}:6")
        );
        assert_eq!(
            set(&format!("{A}:1-10"))
                .difference(&set(&format!("{A}:3-4:6")))
                .to_string(),
            format!("{A}:1-2:5:7-10")
        );
    }

    fn arb_set() -> impl Strategy<Value = GtidSet> {
        let uuid = prop::sample::select(vec![
            parse_uuid(A).unwrap(),
            parse_uuid(B).unwrap(),
            [0u8; 16],
            [0xff; 16],
        ]);
        let tag = prop::sample::select(vec!["", "", "alpha", "b_2"]);
        prop::collection::vec((uuid, tag, 1u64..60, 0u64..8), 0..30).prop_map(|items| {
            let mut s = GtidSet::new();
            for (uuid, tag, start, len) in items {
                s.insert_interval(uuid, tag, start, start + len + 1);
            }
            s
        })
    }

    fn is_normal(s: &GtidSet) -> bool {
        s.sources.values().all(|list| {
            !list.is_empty()
                && list.iter().all(|&(a, b)| 0 < a && a < b)
                && list.windows(2).all(|w| w[0].1 < w[1].0)
        })
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(s in arb_set()) {
            let text = s.to_string();
            let back: GtidSet = text.parse().unwrap();
            prop_assert_eq!(&back, &s);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn insert_keeps_the_normal_form_and_the_members(
            s in arb_set(),
            gnos in prop::collection::vec(1u64..80, 0..40),
        ) {
            let uuid = parse_uuid(A).unwrap();
            let mut t = s.clone();
            for &g in &gnos {
                t.insert(uuid, "", g);
                prop_assert!(is_normal(&t));
            }
            for g in 1..90 {
                let want = s.contains(uuid, "", g) || gnos.contains(&g);
                prop_assert_eq!(t.contains(uuid, "", g), want, "gno {}", g);
            }
            prop_assert!(s.is_subset_of(&t));
            prop_assert!(t.difference(&s).is_subset_of(&t));
            let mut u = t.difference(&s);
            u.union(&s);
            prop_assert_eq!(u, t);
        }
    }
}
