//! Where the `trace` command writes stream lines: NDJSON to a writer, or one file per domain.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use trace_core::ndjson::StreamLine;
use trace_core::Domain;

use crate::chunks::RecordsBlock;

/// The format of the per-domain files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON record per line.
    Ndjson,
    /// A header of the domain's columns, then one row per record.
    Csv,
}

impl Format {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }
}

/// Receives the lines of a stream in order.
pub trait Sink {
    /// Writes one line.
    fn line(&mut self, line: &StreamLine) -> io::Result<()>;
    /// Writes one chunk's `records` lines (by default, parsed and written one by one).
    fn records(&mut self, block: &RecordsBlock) -> io::Result<()> {
        for line in block.lines().map_err(io::Error::other)? {
            self.line(&line)?;
        }
        Ok(())
    }
    /// Flushes everything.
    fn finish(&mut self) -> io::Result<()>;
}

/// Every line as NDJSON (the stream's own format), flushed per line so a reader sees records as they
/// arrive.
pub struct NdjsonSink<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> NdjsonSink<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        NdjsonSink { out, buf: Vec::new() }
    }
}

impl<W: Write> Sink for NdjsonSink<W> {
    fn line(&mut self, line: &StreamLine) -> io::Result<()> {
        self.buf.clear();
        line.write_to(&mut self.buf);
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }

    /// The stream's own bytes, unparsed.
    fn records(&mut self, block: &RecordsBlock) -> io::Result<()> {
        self.buf.clear();
        block.write_lines(&mut self.buf);
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// One file per domain in a folder (`<domain>.ndjson` or `<domain>.csv`), plus `meta.json` and
/// `aggregation.json` when the stream has them.
pub struct DirSink {
    dir: PathBuf,
    format: Format,
    open: Option<(Domain, BufWriter<File>)>,
    written: Vec<(PathBuf, u64)>,
    records: u64,
}

impl DirSink {
    /// Creates the folder when missing.
    pub fn new(dir: &Path, format: Format) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(DirSink { dir: dir.to_owned(), format, open: None, written: Vec::new(), records: 0 })
    }

    /// The files written and their records.
    pub fn written(&self) -> &[(PathBuf, u64)] {
        &self.written
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some((domain, mut file)) = self.open.take() {
            file.flush()?;
            let path = self.dir.join(format!("{domain}.{}", self.format.extension()));
            self.written.push((path, self.records));
        }
        Ok(())
    }
}

impl Sink for DirSink {
    fn line(&mut self, line: &StreamLine) -> io::Result<()> {
        match line {
            StreamLine::Meta { .. } => {
                std::fs::write(self.dir.join("meta.json"), serde_json::to_vec_pretty(line)?)?;
            }
            StreamLine::DomainStart { domain, .. } => {
                self.close()?;
                let path = self.dir.join(format!("{domain}.{}", self.format.extension()));
                let mut file = BufWriter::with_capacity(256 << 10, File::create(&path)?);
                if self.format == Format::Csv {
                    let header: Vec<String> = domain.columns().iter().map(|c| csv_field(c.name)).collect();
                    writeln!(file, "{}", header.join(","))?;
                }
                self.open = Some((*domain, file));
                self.records = 0;
            }
            StreamLine::Records { domain, data, .. } => {
                let Some((open, file)) = self.open.as_mut().filter(|(d, _)| d == domain) else {
                    return Err(io::Error::other(format!("records of {domain} outside its domain")));
                };
                for record in data {
                    match self.format {
                        Format::Ndjson => {
                            serde_json::to_writer(&mut *file, record)?;
                            file.write_all(b"\n")?;
                        }
                        Format::Csv => writeln!(file, "{}", csv_row(*open, record))?,
                    }
                }
                self.records += data.len() as u64;
            }
            StreamLine::DomainEnd { .. } => self.close()?,
            StreamLine::Aggregation { data } => {
                std::fs::write(self.dir.join("aggregation.json"), serde_json::to_vec_pretty(data)?)?;
            }
            StreamLine::Warning { .. } | StreamLine::Error { .. } | StreamLine::Complete { .. } => {}
        }
        Ok(())
    }

    /// NDJSON files take the records as stored; CSV parses them.
    fn records(&mut self, block: &RecordsBlock) -> io::Result<()> {
        if self.format != Format::Ndjson {
            for line in block.lines().map_err(io::Error::other)? {
                self.line(&line)?;
            }
            return Ok(());
        }
        let domain = block.domain;
        let Some((_, file)) = self.open.as_mut().filter(|(d, _)| *d == domain) else {
            return Err(io::Error::other(format!("records of {domain} outside its domain")));
        };
        if block.records > 0 {
            file.write_all(&block.ndjson)?;
            if !block.ndjson.ends_with(b"\n") {
                file.write_all(b"\n")?;
            }
        }
        self.records += block.records;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.close()
    }
}

/// One CSV row of `record` in the order of the domain's columns (null = empty).
pub fn csv_row(domain: Domain, record: &Value) -> String {
    let cells: Vec<String> = domain
        .columns()
        .iter()
        .map(|c| match &record[c.name] {
            Value::Null => String::new(),
            Value::String(s) => csv_field(s),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => csv_field(&other.to_string()),
        })
        .collect();
    cells.join(",")
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn dir_sink_writes_one_file_per_domain() {
        let dir = std::env::temp_dir().join(format!("trace-client-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let columns = Domain::Holds.columns();
        let record: serde_json::Map<String, Value> =
            columns.iter().map(|c| (c.name.to_owned(), json!("x,y"))).collect();
        let record = Value::Object(record);
        for format in [Format::Ndjson, Format::Csv] {
            let mut sink = DirSink::new(&dir, format).unwrap();
            for line in [
                StreamLine::DomainStart { domain: Domain::Holds, total: 2 },
                StreamLine::Records {
                    domain: Domain::Holds,
                    batch: 0,
                    count: 2,
                    data: vec![record.clone(), record.clone()],
                },
                StreamLine::DomainEnd { domain: Domain::Holds, count: 2 },
                StreamLine::Complete { total_records: 2 },
            ] {
                sink.line(&line).unwrap();
            }
            sink.finish().unwrap();
            assert_eq!(sink.written().len(), 1);
            assert_eq!(sink.written()[0].1, 2);
            let text = std::fs::read_to_string(dir.join(format!("holds.{}", format.extension()))).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            match format {
                Format::Ndjson => {
                    assert_eq!(lines.len(), 2);
                    assert_eq!(serde_json::from_str::<Value>(lines[0]).unwrap(), record);
                }
                Format::Csv => {
                    assert_eq!(lines.len(), 3);
                    assert_eq!(lines[0], columns.iter().map(|c| c.name).collect::<Vec<_>>().join(","));
                    assert!(lines[1].starts_with("\"x,y\","));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
