//! gzip for the stream route: whether the caller accepts it ([`accepts_gzip`]), and one gzip member
//! written piece by piece ([`GzipPieces`]).
//!
//! No maintained crate in reach parses `Accept-Encoding` on its own (tower-http keeps its parser
//! private), so this is a small parser of RFC 9110 §12.5.3, tested below.
//!
//! The encoder is flate2's raw deflate (zlib-rs backend, fast level) inside a gzip header and trailer
//! written here, with a *full* flush after each piece: every piece is then whole bytes of deflate that
//! refer to nothing before it, so the caller reads each piece's lines as soon as it arrives, and a
//! piece that would pass the stream's byte limit can be dropped after compressing it (its real size
//! known) without breaking the stream — the CRC and length of the trailer count only the pieces sent.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Whether an `Accept-Encoding` value (all of the request's fields joined with `,`) accepts gzip:
/// `gzip` or `x-gzip` with a weight above zero, or — when neither is named — `*` with one. No header,
/// an empty one, or a bad weight (taken as 0): no.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let (mut gzip, mut any) = (None, None);
    for item in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let mut q = Some(1000);
        for parameter in parts {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            if name.trim().eq_ignore_ascii_case("q") {
                q = qvalue(value.trim());
            }
        }
        let q = q.unwrap_or(0);
        match coding.as_str() {
            // The highest weight when a coding is named twice.
            "gzip" | "x-gzip" => gzip = gzip.max(Some(q)),
            "*" => any = any.max(Some(q)),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0)
}

/// A weight in thousandths: `0`, `0.`, `0.5`, `0.125`, `1`, `1.000`; anything else is None.
fn qvalue(text: &str) -> Option<u32> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let frac_ok = frac.len() <= 3 && frac.bytes().all(|b| b.is_ascii_digit());
    let thousandths = format!("{frac:0<3}").parse::<u32>().ok()?;
    match int {
        "0" if frac_ok => Some(thousandths),
        "1" if frac_ok && thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The fixed gzip header: deflate, no name or time, "fastest" (XFL 4), OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

/// One gzip member written piece by piece: [`compress`](Self::compress) a piece, then
/// [`commit`](Self::commit) it when its bytes are sent; [`finish`](Self::finish) ends the member.
pub struct GzipPieces {
    deflate: Compress,
    crc: Crc,
    header_sent: bool,
}

impl Default for GzipPieces {
    fn default() -> Self {
        GzipPieces { deflate: Compress::new(Compression::fast(), false), crc: Crc::new(), header_sent: false }
    }
}

impl GzipPieces {
    /// The bytes that carry `plain` (the member's header first, the first time): a full flush ends
    /// them, so they can be sent at once, or dropped (then `commit` is not called).
    pub fn compress(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() / 4 + 64);
        if !self.header_sent {
            out.extend_from_slice(&GZIP_HEADER);
        }
        self.run(plain, FlushCompress::Full, &mut out);
        out
    }

    /// Counts `plain` (whose bytes from [`compress`](Self::compress) were sent) in the trailer.
    pub fn commit(&mut self, plain: &[u8]) {
        self.header_sent = true;
        self.crc.update(plain);
    }

    /// The end of the member: the last deflate block and the trailer (CRC-32 and length of what was
    /// committed); the header too if nothing was.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        if !self.header_sent {
            out.extend_from_slice(&GZIP_HEADER);
            self.header_sent = true;
        }
        self.run(&[], FlushCompress::Finish, &mut out);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        out
    }

    fn run(&mut self, input: &[u8], flush: FlushCompress, out: &mut Vec<u8>) {
        let start = self.deflate.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let consumed = (self.deflate.total_in() - start) as usize;
            // Compressing into memory cannot fail (zlib's only errors are misuse: a stream already
            // finished, or no room, which `reserve` rules out).
            let status =
                self.deflate.compress_vec(&input[consumed..], out, flush).unwrap_or(Status::StreamEnd);
            let consumed = (self.deflate.total_in() - start) as usize;
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // The flush is complete when the output was not filled up.
                _ => consumed == input.len() && out.len() < out.capacity(),
            };
            if done {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn gzip_is_accepted_by_name_or_wildcard_with_a_weight_above_zero() {
        let yes = [
            "gzip",
            "gzip, deflate",
            "deflate, gzip;q=0.5",
            "br;q=1.0, GZIP;q=0.001",
            "x-gzip",
            "*",
            "identity, *;q=0.1",
            "gzip ; q=1",
            "gzip;q=1.000",
            "gzip;q=0, gzip;q=0.5",
            "deflate,,gzip",
        ];
        for value in yes {
            assert!(accepts_gzip(Some(value)), "{value:?} accepts gzip");
        }
        let no = [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip;q=0.000",
            "gzip;q=0, *",
            "*;q=0",
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.5000",
            "gzip;q=abc",
            "gzip;q=",
            "gzipped",
            "deflate;q=0.5, identity;q=1",
        ];
        for value in no {
            assert!(!accepts_gzip(Some(value)), "{value:?} does not accept gzip");
        }
        assert!(!accepts_gzip(None));
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("a valid gzip member");
        out
    }

    #[test]
    fn pieces_make_one_gzip_member_and_a_dropped_piece_leaves_it_valid() {
        let pieces: Vec<Vec<u8>> = (0..6)
            .map(|i| (0..300).flat_map(|n| format!("{{\"piece\":{i},\"n\":{n}}}\n").into_bytes()).collect())
            .collect();
        let mut gz = GzipPieces::default();
        let (mut sent, mut expected) = (Vec::new(), Vec::new());
        for (i, piece) in pieces.iter().enumerate() {
            let out = gz.compress(piece);
            assert!(out.len() < piece.len() / 2, "compressed");
            // Each piece ends with a full flush: what was sent so far decodes to its lines already.
            if i == 3 {
                continue; // dropped: its bytes are never sent
            }
            gz.commit(piece);
            sent.extend_from_slice(&out);
            expected.extend_from_slice(piece);
            let mut partial = Vec::new();
            let _ = flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut partial);
            assert_eq!(partial, expected, "piece {i} readable at once");
        }
        sent.extend_from_slice(&gz.finish());
        assert_eq!(gunzip(&sent), expected);
        // One member: nothing after its trailer.
        let mut decoder = flate2::read::GzDecoder::new(&sent[..]);
        std::io::copy(&mut decoder, &mut std::io::sink()).unwrap();
        assert!(decoder.into_inner().is_empty());

        let mut empty = GzipPieces::default();
        assert_eq!(gunzip(&empty.finish()), b"");
    }
}
