//! The result page's query (`GET /api/trace/job/{id}/result?domain=&offset=&limit=`) and which
//! stored chunks, and which of their records, a page reads. Pure and checked: every number comes from
//! a caller, so nothing here overflows or panics, whatever it is given.

use crate::domain::Domain;
use crate::error::TraceError;

/// Most records a page holds, and its default size.
pub const MAX_PAGE: usize = 5000;

/// A page request, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// The domain named, if any (else the job's first).
    pub domain: Option<Domain>,
    /// The first record of the page, in the domain.
    pub offset: u64,
    /// Records on the page, 1 to [`MAX_PAGE`].
    pub limit: usize,
}

impl PageQuery {
    /// Checks the query's parameters as sent (absent or empty: the default).
    pub fn parse(
        domain: Option<&str>,
        offset: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Self, TraceError> {
        let offset = number("offset", offset, 0, u64::MAX)?;
        let limit = number("limit", limit, MAX_PAGE as u64, MAX_PAGE as u64)? as usize;
        if limit == 0 {
            return Err(TraceError::InvalidParameter { name: "limit", reason: "must be at least 1".into() });
        }
        let domain = match domain.filter(|d| !d.is_empty()) {
            Some(d) => Some(
                d.parse::<Domain>().map_err(|_| TraceError::UnknownDomain(d.chars().take(64).collect()))?,
            ),
            None => None,
        };
        Ok(PageQuery { domain, offset, limit })
    }

    /// The parts of the chunks (of `chunk_records` records each, in order) that hold the page, in a
    /// domain of `total` records.
    pub fn covering(&self, chunk_records: &[u64], total: u64) -> Vec<Slice> {
        let end = self.offset.saturating_add(self.limit as u64).min(total);
        let mut out = Vec::new();
        if end <= self.offset {
            return out;
        }
        let mut first = 0u64;
        for (chunk, records) in chunk_records.iter().enumerate() {
            let last = first.saturating_add(*records);
            if last > self.offset && first < end {
                let skip = self.offset.saturating_sub(first);
                let take = end.min(last).saturating_sub(first.max(self.offset));
                out.push(Slice { chunk, skip, take });
            }
            if last >= end {
                break;
            }
            first = last;
        }
        out
    }
}

/// Records `skip..skip + take` of chunk number `chunk` (in the domain's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The chunk's position in the domain.
    pub chunk: usize,
    /// Records of it before the page.
    pub skip: u64,
    /// Records of it on the page.
    pub take: u64,
}

fn number(name: &'static str, value: Option<&str>, default: u64, max: u64) -> Result<u64, TraceError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n <= max).ok_or_else(|| TraceError::InvalidParameter {
            name,
            reason: format!(
                "{:?} is not a whole number from 0 to {max}",
                v.chars().take(64).collect::<String>()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_the_chunks_that_cover_it() {
        let q = PageQuery::parse(Some("holds"), Some("8"), Some("5")).unwrap();
        assert_eq!(q, PageQuery { domain: Some(Domain::Holds), offset: 8, limit: 5 });
        assert_eq!(
            q.covering(&[5, 5, 5], 15),
            vec![Slice { chunk: 1, skip: 3, take: 2 }, Slice { chunk: 2, skip: 0, take: 3 }]
        );
        assert!(q.covering(&[5], 5).is_empty(), "past the end: an empty page");
        let far = PageQuery::parse(None, Some(&u64::MAX.to_string()), None).unwrap();
        assert!(far.covering(&[5, u64::MAX], u64::MAX).iter().all(|s| s.take <= MAX_PAGE as u64));
        assert!(PageQuery::parse(None, Some("-1"), None).is_err());
        assert!(PageQuery::parse(None, None, Some("0")).is_err());
        assert!(PageQuery::parse(None, None, Some("5001")).is_err());
        assert!(PageQuery::parse(Some("nope"), None, None).is_err());
    }
}
