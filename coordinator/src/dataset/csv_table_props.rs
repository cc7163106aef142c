//! Properties of the CSV reader: any bytes at all give a table or findings, never a
//! panic, and every finding about a row names its line.

use proptest::prelude::*;

use super::super::finding::Severity;
use super::*;

/// Bytes that look enough like a CSV to reach the row checks: separators, quotes, line
/// ends, a BOM, invalid UTF-8 and plain text, in any order.
fn csvish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b",".to_vec()),
        Just(b";".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        Just(b" ".to_vec()),
        "[a-z0-9._]{1,6}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
}

/// Lines a byte string has: one more than its line ends (LF, CRLF or a lone CR).
fn line_count(bytes: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n");
    text.matches(['\n', '\r']).count() as u64 + 1
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = Path::new("data/train.csv");
    let mut findings = Vec::new();
    let table = Table::parse(path, bytes, &mut findings);
    let lines = line_count(bytes);
    for finding in &findings {
        prop_assert_eq!(finding.severity, Severity::Error);
        prop_assert_eq!(finding.location.source.as_deref(), Some(path));
        let text = finding.to_string();
        prop_assert!(text.contains("data/train.csv"), "{}", text);
        match finding.location.line {
            Some(line) => {
                prop_assert!(
                    (1..=lines).contains(&line),
                    "line {} of {}: {}",
                    line,
                    lines,
                    text
                );
                prop_assert!(text.contains(&format!("line {line}")), "{}", text);
            }
            // Only a file with no record at all has no line to name.
            None => prop_assert!(table.is_none() && text.contains("empty"), "{}", text),
        }
    }
    if let Some(table) = table {
        let mut previous = 1;
        for row in &table.rows {
            prop_assert_eq!(row.fields.len(), table.headers.len());
            prop_assert!(
                row.line > previous && row.line <= lines,
                "row at line {}",
                row.line
            );
            previous = row.line;
        }
    } else {
        prop_assert!(!findings.is_empty(), "no table and no finding saying why");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(foldtrain_proto::property_cases(256)))]

    #[test]
    fn arbitrary_bytes_never_panic_and_findings_name_their_line(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check(&bytes)?;
    }

    #[test]
    fn csv_like_bytes_never_panic_and_findings_name_their_line(bytes in csvish()) {
        check(&bytes)?;
    }
}
