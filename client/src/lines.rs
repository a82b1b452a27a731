//! Splitting a byte stream into lines with a bounded buffer: at most one line (plus the chunk that
//! completes it) is held, never the whole body.

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

/// Why no further line could be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// A line grew past the limit without a newline.
    TooLong {
        /// Its 1-based number.
        line_no: u64,
        /// The limit in bytes.
        limit: usize,
        /// Its first bytes.
        head: Bytes,
    },
    /// The body ended in the middle of a line (the connection was cut).
    Truncated {
        /// Bytes of the incomplete line.
        bytes: usize,
    },
    /// The body failed.
    Body(E),
}

/// Reads newline-terminated lines from a stream of byte chunks.
pub struct LineReader<S> {
    body: S,
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max_line: usize,
    line_no: u64,
    ended: bool,
}

impl<S, E> LineReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    /// A reader refusing lines longer than `max_line` bytes.
    pub fn new(body: S, max_line: usize) -> Self {
        LineReader { body, buf: BytesMut::new(), scanned: 0, max_line, line_no: 0, ended: false }
    }

    /// Number of the last line returned (1-based; blank lines count).
    pub fn line_no(&self) -> u64 {
        self.line_no
    }

    fn too_long(&self) -> ReadError<E> {
        ReadError::TooLong {
            line_no: self.line_no + 1,
            limit: self.max_line,
            head: Bytes::copy_from_slice(&self.buf[..self.buf.len().min(120)]),
        }
    }

    /// The next non-blank line without its `\n` (and `\r`), `Ok(None)` at a clean end of the body.
    pub async fn next_line(&mut self) -> Result<Option<Bytes>, ReadError<E>> {
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                if self.scanned + pos > self.max_line {
                    return Err(self.too_long());
                }
                let mut line = self.buf.split_to(self.scanned + pos + 1).freeze();
                self.scanned = 0;
                self.line_no += 1;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_line {
                return Err(self.too_long());
            }
            if self.ended {
                if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                    self.buf.clear();
                    return Ok(None);
                }
                return Err(ReadError::Truncated { bytes: self.buf.len() });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    self.ended = true;
                    return Err(ReadError::Body(e));
                }
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn reader(
        chunks: Vec<&'static str>,
        max: usize,
    ) -> LineReader<impl Stream<Item = Result<Bytes, String>>> {
        LineReader::new(
            stream::iter(chunks.into_iter().map(|c| Ok::<_, String>(Bytes::from_static(c.as_bytes())))),
            max,
        )
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_blank_lines_are_skipped() {
        let mut r = reader(vec!["{\"a\"", ":1}\n\n{\"b\":2}\r", "\n{\"c\":3}\n"], 100);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(r.line_no(), 1);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "{\"b\":2}");
        assert_eq!(r.line_no(), 3);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "{\"c\":3}");
        assert!(r.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_cut_last_line_is_truncation_not_a_line() {
        let mut r = reader(vec!["{\"a\":1}\n{\"b\""], 100);
        assert!(r.next_line().await.unwrap().is_some());
        assert!(matches!(r.next_line().await, Err(ReadError::Truncated { bytes: 4 })));
    }

    #[tokio::test]
    async fn the_buffer_is_bounded() {
        let mut r = reader(vec!["short\n", "0123456789", "0123456789", "0123456789\n"], 25);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "short");
        match r.next_line().await {
            Err(ReadError::TooLong { line_no, limit, .. }) => assert_eq!((line_no, limit), (2, 25)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_body_error_is_reported() {
        let body = stream::iter(vec![Ok(Bytes::from_static(b"x\ny")), Err("reset".to_owned())]);
        let mut r = LineReader::new(body, 100);
        assert_eq!(r.next_line().await.unwrap().unwrap(), "x");
        assert!(matches!(r.next_line().await, Err(ReadError::Body(e)) if e == "reset"));
    }
}
