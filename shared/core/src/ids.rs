//! Identifiers that are valid by construction: [`ContainerId`] and [`JobId`].
//!
//! Parse once at the edge; everything past it takes these types and never re-checks.

use std::fmt;
use std::str::FromStr;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest container id accepted.
pub const MAX_CONTAINER_ID_LEN: usize = 64;

/// A container (production lot) id: the dashboard's rule — any text of 1 to 64 characters after trimming
/// white space, with no control characters. It is only ever bound as a query parameter, never spliced
/// into SQL, an object key or a Redis key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ContainerId(CompactString);

/// Why a string is not a container id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidContainerId {
    /// Empty, or only white space.
    #[error("container id is empty")]
    Empty,
    /// More than [`MAX_CONTAINER_ID_LEN`] characters after trimming.
    #[error("container id is longer than {MAX_CONTAINER_ID_LEN} characters")]
    TooLong,
    /// A control character (U+0000–U+001F, U+007F–U+009F).
    #[error("container id contains the control character {0:?}")]
    ControlChar(char),
}

impl ContainerId {
    /// Trims white space from both ends, checks the rest and wraps it. Held inline (no allocation of
    /// its own) up to 24 bytes: a request of many short ids costs a small multiple of its size.
    pub fn parse(s: impl AsRef<str>) -> Result<Self, InvalidContainerId> {
        let s = s.as_ref().trim();
        if s.is_empty() {
            return Err(InvalidContainerId::Empty);
        }
        // Byte length bounds the character count from above: only long strings are counted.
        if s.len() > MAX_CONTAINER_ID_LEN && s.chars().count() > MAX_CONTAINER_ID_LEN {
            return Err(InvalidContainerId::TooLong);
        }
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(InvalidContainerId::ControlChar(c));
        }
        Ok(ContainerId(CompactString::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ContainerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ContainerId::parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job id: a random UUID v4, written lower-case and hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job id {0:?}: expected a UUID like 3f2b8c1e-0d4a-4c55-9a8e-2b7f6c1d9e00")]
pub struct InvalidJobId(pub String);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        JobId(Uuid::new_v4())
    }

    /// The id of shard `shard` of this job (the record of its lease in the job store): a name-based
    /// UUID (v5) of the job's id and the shard number, so every worker derives the same one and it
    /// never equals a job's (random, v4) id.
    pub fn shard(&self, shard: u32) -> JobId {
        JobId(Uuid::new_v5(&self.0, &shard.to_be_bytes()))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form: ids appear in URLs and object keys, one spelling each.
        if s.len() != 36 {
            return Err(InvalidJobId(s.chars().take(64).collect()));
        }
        Uuid::parse_str(s).map(JobId).map_err(|_| InvalidJobId(s.to_owned()))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(ContainerId::parse("CID-0000001").is_ok());
        assert!(ContainerId::parse("lot_7.a:b/c").is_ok());
        assert_eq!(ContainerId::parse(""), Err(InvalidContainerId::Empty));
        assert_eq!(ContainerId::parse("  lot 7 A  ").unwrap().as_str(), "lot 7 A");
        assert_eq!(ContainerId::parse("批次-ä").unwrap().as_str(), "批次-ä");
        assert_eq!(ContainerId::parse(" \t "), Err(InvalidContainerId::Empty));
        assert_eq!(ContainerId::parse("a\u{7}b"), Err(InvalidContainerId::ControlChar('\u{7}')));
        assert_eq!(ContainerId::parse("x".repeat(65)), Err(InvalidContainerId::TooLong));
        assert!(ContainerId::parse("é".repeat(64)).is_ok(), "64 characters of two bytes each");
        assert_eq!(ContainerId::parse("é".repeat(65)), Err(InvalidContainerId::TooLong));
        assert!(ContainerId::parse("x".repeat(64)).is_ok());
        assert_eq!(serde_json::from_str::<ContainerId>("\" a'b \"").unwrap().as_str(), "a'b");
        assert!(serde_json::from_str::<ContainerId>("\"a\\u0001b\"").is_err());
    }

    #[test]
    fn job_ids() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
        assert!("not-a-uuid".parse::<JobId>().is_err());
        assert!("3f2b8c1e0d4a4c559a8e2b7f6c1d9e00".parse::<JobId>().is_err());
        assert!("3f2b8c1e-0d4a-4c55-9a8e-2b7f6c1d9e00".parse::<JobId>().is_ok());
    }
}

/// A compact list of container ids: one text buffer and the end offset of each id, instead of one
/// allocation per id. A 114,000-id job holds ~1.7 MB of ids this way instead of ~6.5 MB.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdList {
    text: String,
    ends: Vec<u32>,
}

impl IdList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an id.
    pub fn push(&mut self, id: &ContainerId) {
        self.text.push_str(id.as_str());
        self.ends.push(self.text.len() as u32);
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Id `i` as text.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        Some(&self.text[start..end])
    }

    /// Ids `range` as owned ids (one id batch at a time).
    pub fn batch(&self, range: std::ops::Range<usize>) -> Vec<ContainerId> {
        range.filter_map(|i| self.get(i)).map(|s| ContainerId(CompactString::from(s))).collect()
    }

    /// Keeps only ids `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> IdList {
        let mut out = IdList::new();
        for i in range {
            if let Some(s) = self.get(i) {
                out.text.push_str(s);
                out.ends.push(out.text.len() as u32);
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for IdList {
    /// Reads a JSON array of ids straight into the buffer, checking each.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = IdList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of container ids")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<IdList, A::Error> {
                let mut list = IdList::new();
                if let Some(n) = seq.size_hint() {
                    list.ends.reserve(n);
                }
                while let Some(id) = seq.next_element::<ContainerId>()? {
                    list.push(&id);
                }
                list.text.shrink_to_fit();
                list.ends.shrink_to_fit();
                Ok(list)
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// Reads only the ids at positions `.0` of a JSON array of container ids into an [`IdList`] (the others
/// are checked and skipped, never kept), with the array's length: how a shard of a job reads its range
/// of the job's input without holding every id.
#[derive(Debug, Clone)]
pub struct IdRange(pub std::ops::Range<usize>);

impl<'de> serde::de::DeserializeSeed<'de> for IdRange {
    type Value = (IdList, usize);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for IdRange {
    type Value = (IdList, usize);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of container ids")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = IdList::new();
        let mut n = 0;
        while let Some(id) = seq.next_element::<ContainerId>()? {
            if self.0.contains(&n) {
                list.push(&id);
            }
            n += 1;
        }
        list.text.shrink_to_fit();
        list.ends.shrink_to_fit();
        Ok((list, n))
    }
}

/// Reads what [`IdRange`] reads, and also where the array's ids lie in the JSON `text` it is read from:
/// the byte span of each run of `every` ids (the last run may be shorter). How the job's first shard
/// reads every id of a job again, one span at a time with ranged reads, instead of holding them all: a
/// span, wrapped in `[` `]`, is a JSON array of its ids ([`IdList::from_span`]).
///
/// Only for a deserializer that reads from `text` itself (`serde_json::Deserializer::from_slice`): the
/// spans are found from where each id's text lies in memory.
#[derive(Debug, Clone)]
pub struct IdRangeSpans<'t> {
    /// The ids kept.
    pub keep: std::ops::Range<usize>,
    /// Ids per span (at least 1).
    pub every: usize,
    /// The JSON text being read.
    pub text: &'t [u8],
}

/// The ids kept, the array's length and the spans.
pub type IdsWithSpans = (IdList, usize, Vec<std::ops::Range<u64>>);

impl<'de> serde::de::DeserializeSeed<'de> for IdRangeSpans<'_> {
    type Value = IdsWithSpans;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for IdRangeSpans<'_> {
    type Value = IdsWithSpans;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of container ids")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let base = self.text.as_ptr() as usize;
        let every = self.every.max(1);
        let (mut list, mut spans, mut n) = (IdList::new(), Vec::new(), 0);
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            let json = raw.get();
            let start =
                (json.as_ptr() as usize).checked_sub(base).filter(|s| s + json.len() <= self.text.len());
            let Some(start) = start else {
                return Err(A::Error::custom("container ids read from another text than the one given"));
            };
            let id: ContainerId = serde_json::from_str(json).map_err(A::Error::custom)?;
            if self.keep.contains(&n) {
                list.push(&id);
            }
            let end = (start + json.len()) as u64;
            if n % every == 0 {
                spans.push(start as u64..end);
            } else if let Some(last) = spans.last_mut() {
                last.end = end;
            }
            n += 1;
        }
        list.text.shrink_to_fit();
        list.ends.shrink_to_fit();
        Ok((list, n, spans))
    }
}

impl IdList {
    /// The ids of a span found by [`IdRangeSpans`] (its bytes: ids separated by commas).
    pub fn from_span(bytes: &[u8]) -> Result<IdList, serde_json::Error> {
        let mut array = Vec::with_capacity(bytes.len() + 2);
        array.push(b'[');
        array.extend_from_slice(bytes);
        array.push(b']');
        serde_json::from_slice(&array)
    }
}

#[cfg(test)]
mod id_list_tests {
    use super::*;

    #[test]
    fn compact_list_round_trips_and_slices() {
        let list: IdList = serde_json::from_str(r#"["A","BB","CCC"]"#).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!((list.get(0), list.get(2), list.get(3)), (Some("A"), Some("CCC"), None));
        let batch: Vec<_> = list.batch(1..3).iter().map(|i| i.as_str().to_owned()).collect();
        assert_eq!(batch, ["BB", "CCC"]);
        assert_eq!(list.slice(1..2).get(0), Some("BB"));
        assert!(serde_json::from_str::<IdList>(r#"["ok","not\u0007ok"]"#).is_err());
    }

    #[test]
    fn a_range_of_the_ids_is_read_alone_with_the_array_s_length() {
        use serde::de::DeserializeSeed;
        let json = r#"["A","BB","CCC","D"]"#;
        let read = |r: std::ops::Range<usize>| {
            let (list, n) = IdRange(r).deserialize(&mut serde_json::Deserializer::from_str(json)).unwrap();
            ((0..list.len()).map(|i| list.get(i).unwrap().to_owned()).collect::<Vec<_>>(), n)
        };
        assert_eq!(read(1..3), (vec!["BB".to_owned(), "CCC".to_owned()], 4));
        assert_eq!(read(0..4).0.len(), 4);
        assert_eq!(read(4..4), (vec![], 4));
        let bad =
            IdRange(0..1).deserialize(&mut serde_json::Deserializer::from_str(r#"["ok","not\u0007ok"]"#));
        assert!(bad.is_err(), "ids outside the range are still checked");
    }

    #[test]
    fn the_spans_of_the_ids_read_back_every_id_in_order() {
        use serde::de::DeserializeSeed;
        let text = br#"[ "A", "BB" ,"CCC",
            "D","E" ]"#;
        let (kept, n, spans) = IdRangeSpans { keep: 1..3, every: 2, text }
            .deserialize(&mut serde_json::Deserializer::from_slice(text))
            .unwrap();
        assert_eq!((kept.len(), kept.get(0), kept.get(1), n), (2, Some("BB"), Some("CCC"), 5));
        assert_eq!(spans.len(), 3);
        let all: Vec<String> = spans
            .iter()
            .flat_map(|s| {
                let list = IdList::from_span(&text[s.start as usize..s.end as usize]).unwrap();
                (0..list.len()).map(|i| list.get(i).unwrap().to_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(all, ["A", "BB", "CCC", "D", "E"]);
        let one = IdRangeSpans { keep: 0..0, every: 10, text }
            .deserialize(&mut serde_json::Deserializer::from_slice(text))
            .unwrap();
        assert_eq!((one.1, one.2.len()), (5, 1));
        let empty = IdRangeSpans { keep: 0..0, every: 10, text: b"[]" }
            .deserialize(&mut serde_json::Deserializer::from_slice(b"[]"))
            .unwrap();
        assert_eq!((empty.1, empty.2.len()), (0, 0));
        let bad_text = br#"["ok","not\u0007ok"]"#;
        let bad = IdRangeSpans { keep: 0..0, every: 1, text: bad_text }
            .deserialize(&mut serde_json::Deserializer::from_slice(bad_text));
        assert!(bad.unwrap_err().to_string().contains("control"), "every id is checked");
        let elsewhere = IdRangeSpans { keep: 0..0, every: 1, text: b"[]" }
            .deserialize(&mut serde_json::Deserializer::from_slice(br#"["A"]"#));
        assert!(elsewhere.unwrap_err().to_string().contains("another text"));
    }
}
