//! The chunk encodings compared (`--only codecs`, no stack needed): for each candidate, the ratio, the
//! writer's CPU per MB of NDJSON and the reader's decoding speed, on the reference dataset's records cut
//! into chunks of `TRACE_CHUNK_RECORDS` as the worker cuts them.

use std::io::{Read, Write};
use std::time::Instant;

use serde_json::{json, Value};
use trace_core::record::RowBatch;
use trace_core::Domain;

/// One candidate: its name, its encoder and its decoder (given the decoded size, as the manifest gives it).
struct Codec {
    name: &'static str,
    encode: fn(&[u8]) -> Vec<u8>,
    decode: fn(&[u8], usize) -> Vec<u8>,
}

fn libdeflate(level: i32, data: &[u8]) -> Vec<u8> {
    let level = libdeflater::CompressionLvl::new(level).unwrap_or_default();
    let mut compressor = libdeflater::Compressor::new(level);
    let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
    let n = compressor.gzip_compress(data, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn libdeflate_decode(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0; size];
    let n = libdeflater::Decompressor::new().gzip_decompress(data, &mut out).unwrap_or(0);
    out.truncate(n);
    out
}

fn zlib_rs(level: u32, data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

fn zlib_rs_decode(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let _ = flate2::read::GzDecoder::new(data).read_to_end(&mut out);
    out
}

const CODECS: &[Codec] = &[
    Codec {
        name: "lz4 block (the seed's)",
        encode: lz4_flex::block::compress,
        decode: |d, n| lz4_flex::block::decompress(d, n).unwrap_or_default(),
    },
    Codec {
        name: "gzip, libdeflate level 1 (chosen)",
        encode: |d| libdeflate(1, d),
        decode: libdeflate_decode,
    },
    Codec { name: "gzip, libdeflate level 6", encode: |d| libdeflate(6, d), decode: libdeflate_decode },
    Codec { name: "gzip, zlib-rs level 1", encode: |d| zlib_rs(1, d), decode: zlib_rs_decode },
    Codec { name: "gzip, zlib-rs level 6", encode: |d| zlib_rs(6, d), decode: zlib_rs_decode },
];

/// The NDJSON chunks of the first `n` containers' five tables, `per_chunk` records each.
fn chunks(n: u64, per_chunk: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for domain in Domain::BASE {
        let mut batch = RowBatch::with_capacity(domain, 64);
        for i in 1..=n {
            trace_dataset::push_rows(domain, i, &mut batch);
        }
        let mut chunk = Vec::new();
        for k in 0..batch.len() {
            batch.write_row_json(k, &mut chunk);
            chunk.push(b'\n');
            if (k + 1) % per_chunk == 0 {
                out.push(std::mem::take(&mut chunk));
            }
        }
        if !chunk.is_empty() {
            out.push(chunk);
        }
    }
    out
}

/// Measures every candidate on the first `n` containers' records.
pub fn measure(n: u64, per_chunk: usize) -> Value {
    let chunks = chunks(n, per_chunk);
    let plain: usize = chunks.iter().map(Vec::len).sum();
    let mb = plain as f64 / 1e6;
    let mut rows = Vec::new();
    for codec in CODECS {
        let started = Instant::now();
        let encoded: Vec<Vec<u8>> = chunks.iter().map(|c| (codec.encode)(c)).collect();
        let encode_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let mut same = true;
        for (c, e) in chunks.iter().zip(&encoded) {
            same &= (codec.decode)(e, c.len()) == *c;
        }
        let decode_s = started.elapsed().as_secs_f64();
        let stored: usize = encoded.iter().map(Vec::len).sum();
        let row = json!({
            "codec": codec.name, "ratio": plain as f64 / stored as f64, "stored_mb": stored as f64 / 1e6,
            "encode_ms_per_mb": encode_s * 1e3 / mb, "encode_mb_per_s": mb / encode_s,
            "decode_mb_per_s": mb / decode_s, "round_trip_ok": same,
        });
        eprintln!("codec: {row}");
        rows.push(row);
    }
    json!({ "ids": n, "chunk_records": per_chunk, "chunks": chunks.len(), "ndjson_mb": mb, "codecs": rows })
}
