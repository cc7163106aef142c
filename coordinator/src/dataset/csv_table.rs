//! Reading a CSV the way real files come: with or without a UTF-8 BOM, CRLF or LF line
//! ends, comma or semicolon separated, quoted fields, stray whitespace.

use std::path::{Path, PathBuf};

use super::finding::{Finding, FindingKind, Location};

/// A CSV file's header and rows, every field trimmed.
#[derive(Debug)]
pub(crate) struct Table {
    pub path: PathBuf,
    pub headers: Vec<String>,
    pub rows: Vec<Row>,
}

#[derive(Debug)]
pub(crate) struct Row {
    /// One-based line where the record starts (the header is line 1).
    pub line: u64,
    pub fields: Vec<String>,
}

impl Table {
    /// Reads `path`. A file that cannot be read or parsed at all is one error finding;
    /// a row with the wrong field count or invalid UTF-8 is an error finding for that row,
    /// and the row is left out.
    pub fn read(path: &Path, findings: &mut Vec<Finding>) -> Option<Table> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                findings.push(Finding::error(
                    FindingKind::UnreadableCsv,
                    at(path, None),
                    format!("cannot read the csv: {e}"),
                ));
                return None;
            }
        };
        Self::parse(path, &bytes, findings)
    }

    /// Parses the bytes of the CSV at `path` (named in findings) as [`Self::read`] does.
    pub fn parse(path: &Path, bytes: &[u8], findings: &mut Vec<Finding>) -> Option<Table> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(detect_delimiter(bytes))
            .flexible(true)
            .trim(csv::Trim::All)
            .has_headers(false)
            .from_reader(bytes);
        let lines = LineIndex::new(bytes);
        let mut records = reader.byte_records();
        let headers = read_headers(path, records.next(), findings)?;
        let rows = read_rows(path, records, &lines, headers.len(), findings)?;
        Some(Table {
            path: path.to_path_buf(),
            headers,
            rows,
        })
    }

    /// The index of column `name`: an exact match, else the only case-insensitive one.
    /// A missing column is an error finding that lists the columns there are.
    pub fn column(&self, name: &str, findings: &mut Vec<Finding>) -> Option<usize> {
        if let Some(i) = self.headers.iter().position(|h| h == name) {
            return Some(i);
        }
        let folded: Vec<usize> = (0..self.headers.len())
            .filter(|&i| self.headers[i].eq_ignore_ascii_case(name))
            .collect();
        if let [i] = folded[..] {
            return Some(i);
        }
        findings.push(Finding::error(
            FindingKind::MissingColumn,
            at(&self.path, Some(1)),
            format!(
                "no column {name:?}; the columns are {:?} (choose one with the column flags)",
                self.headers
            ),
        ));
        None
    }

    /// The index of column `name` if there is one, without a finding.
    pub fn optional_column(&self, name: &str) -> Option<usize> {
        self.column(name, &mut Vec::new())
    }
}

fn at(path: &Path, line: Option<u64>) -> Location {
    Location {
        source: Some(path.to_path_buf()),
        line,
        file: None,
    }
}

/// The header fields from the first record; a missing or unreadable header is an error
/// finding and `None`.
fn read_headers(
    path: &Path,
    first: Option<csv::Result<csv::ByteRecord>>,
    findings: &mut Vec<Finding>,
) -> Option<Vec<String>> {
    let (line, message) = match first {
        Some(Ok(record)) => match decode_fields(&record) {
            Ok(fields) => return Some(fields),
            Err(message) => (Some(1), message),
        },
        Some(Err(e)) => (Some(1), format!("cannot parse the header: {e}")),
        None => (None, "the csv is empty; it needs a header row".to_owned()),
    };
    findings.push(Finding::error(
        FindingKind::UnreadableCsv,
        at(path, line),
        message,
    ));
    None
}

/// The data rows after the header, padded to `width` fields; blank lines are skipped.
/// A record the parser cannot get past ends the table (`None`); a row that is too long
/// or not UTF-8 is an error finding and left out.
fn read_rows(
    path: &Path,
    records: impl Iterator<Item = csv::Result<csv::ByteRecord>>,
    lines: &LineIndex,
    width: usize,
    findings: &mut Vec<Finding>,
) -> Option<Vec<Row>> {
    let mut rows = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map(|p| lines.line_at(p.byte()));
                findings.push(Finding::error(
                    FindingKind::UnreadableCsv,
                    at(path, line),
                    format!("cannot parse the csv past this point: {e}"),
                ));
                return None;
            }
        };
        let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if record.len() > width {
            findings.push(Finding::error(
                FindingKind::MalformedRow,
                at(path, Some(line)),
                format!(
                    "{} fields but the header has {}; quote fields that contain the separator",
                    record.len(),
                    width
                ),
            ));
            continue;
        }
        match decode_fields(&record) {
            Ok(mut fields) => {
                fields.resize(width, String::new());
                rows.push(Row { line, fields });
            }
            Err(message) => findings.push(Finding::error(
                FindingKind::MalformedRow,
                at(path, Some(line)),
                message,
            )),
        }
    }
    Some(rows)
}

/// Line numbers from byte offsets. The csv reader's own line count lags when the
/// previous record ended in CRLF, so lines are counted here from the bytes: a line ends
/// at LF, CRLF, or a lone CR (as old Mac spreadsheets save CSVs, and as the reader ends
/// records).
struct LineIndex<'a> {
    bytes: &'a [u8],
    newlines: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let newlines = (0..bytes.len())
            .filter(|&i| match bytes[i] {
                b'\n' => true,
                b'\r' => bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            })
            .collect();
        Self { bytes, newlines }
    }

    /// The one-based line of the first byte at or after `offset` that is not a line end.
    fn line_at(&self, offset: u64) -> u64 {
        let mut at = offset as usize;
        while at < self.bytes.len() && matches!(self.bytes[at], b'\r' | b'\n') {
            at += 1;
        }
        self.newlines.partition_point(|&n| n < at) as u64 + 1
    }
}

fn decode_fields(record: &csv::ByteRecord) -> Result<Vec<String>, String> {
    record
        .iter()
        .enumerate()
        .map(|(i, field)| {
            String::from_utf8(field.to_vec())
                .map_err(|_| format!("field {} is not valid UTF-8", i + 1))
        })
        .collect()
}

/// The separator of the header line: whichever of `,` `;` tab occurs most outside quotes.
fn detect_delimiter(bytes: &[u8]) -> u8 {
    let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &b in header {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for (delimiter, count) in &mut counts {
                if b == *delimiter {
                    *count += 1;
                }
            }
        }
    }
    // Ties (including a one-column header) keep the comma, listed first.
    counts
        .iter()
        .fold(
            (b',', 0),
            |best, &(d, c)| if c > best.1 { (d, c) } else { best },
        )
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(content: &[u8]) -> (Option<Table>, Vec<Finding>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, content).unwrap();
        let mut findings = Vec::new();
        (Table::read(&path, &mut findings), findings)
    }

    #[test]
    fn tolerates_bom_crlf_quotes_and_whitespace() {
        let (table, findings) = read(
            b"\xEF\xBB\xBFfilename , label\r\n a.jpg ,\"Blood, fresh\" \r\n\r\nb.jpg,Polyp\r\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        let table = table.unwrap();
        assert_eq!(table.headers, ["filename", "label"]);
        assert_eq!(table.rows[0].fields, ["a.jpg", "Blood, fresh"]);
        assert_eq!(table.rows[0].line, 2);
        assert_eq!(table.rows[1].fields, ["b.jpg", "Polyp"]);
        assert_eq!(table.rows[1].line, 4);
    }

    #[test]
    fn detects_semicolons() {
        let (table, _) = read(b"filename;video_id;finding_class\na.jpg;v1;Polyp, small\n");
        let table = table.unwrap();
        assert_eq!(table.rows[0].fields, ["a.jpg", "v1", "Polyp, small"]);
    }

    #[test]
    fn short_rows_are_padded_and_long_rows_reported() {
        let (table, findings) = read(b"filename,label\na.jpg\nb.jpg,Blood, fresh\n");
        assert_eq!(table.unwrap().rows[0].fields, ["a.jpg", ""]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, FindingKind::MalformedRow);
        assert_eq!(findings[0].location.line, Some(3));
        assert!(
            findings[0]
                .message
                .contains("3 fields but the header has 2"),
            "{findings:?}"
        );
    }

    #[test]
    fn unreadable_and_empty_files_are_findings() {
        let mut findings = Vec::new();
        assert!(Table::read(Path::new("/nonexistent/x.csv"), &mut findings).is_none());
        assert_eq!(findings[0].kind, FindingKind::UnreadableCsv);
        let (table, findings) = read(b"");
        assert!(table.is_none());
        assert!(findings[0].message.contains("empty"), "{findings:?}");
    }

    #[test]
    fn lone_carriage_returns_end_lines_too() {
        let (table, findings) = read(b"filename,label\ra.jpg,x\rb.jpg,y,z\rc.jpg,w\r");
        let table = table.unwrap();
        let lines: Vec<u64> = table.rows.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 4]);
        assert_eq!(findings[0].location.line, Some(3));
    }

    #[test]
    fn invalid_utf8_row_is_reported_with_its_line() {
        let (table, findings) = read(b"filename,label\na.jpg,ok\nb.jpg,\xff\xfe\n");
        assert_eq!(table.unwrap().rows.len(), 1);
        assert_eq!(findings[0].location.line, Some(3));
        assert!(findings[0].message.contains("UTF-8"));
    }

    #[test]
    fn columns_match_exactly_then_case_insensitively() {
        let (table, _) = read(b"Filename,Label\na,b\n");
        let table = table.unwrap();
        let mut findings = Vec::new();
        assert_eq!(table.column("filename", &mut findings), Some(0));
        assert_eq!(table.column("video_id", &mut findings), None);
        assert_eq!(findings[0].kind, FindingKind::MissingColumn);
        assert!(findings[0].message.contains("\"video_id\""));
    }
}

#[cfg(test)]
#[path = "csv_table_props.rs"]
mod props;
