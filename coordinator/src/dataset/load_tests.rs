//! Every validation case, on small data sets the tests write themselves.

use std::path::{Path, PathBuf};

use foldtrain_proto::BlobHash;

use super::test_images::{jpeg, without_huffman_tables};
use super::*;

/// A seed-layout data set in a temporary folder.
struct Seed {
    dir: tempfile::TempDir,
}

impl Seed {
    /// `rows` is the training CSV body after the header; every named file that does not
    /// start with "missing" is written as a small JPEG.
    fn new(header: &str, rows: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("train")).unwrap();
        let mut csv = format!("{header}\n");
        for (i, row) in rows.iter().enumerate() {
            csv.push_str(row);
            csv.push('\n');
            let name = row.split(',').next().unwrap().trim().trim_matches('"');
            if !name.starts_with("missing")
                && !name.is_empty()
                && !name.contains("..")
                && !name.starts_with('/')
            {
                std::fs::write(dir.path().join("train").join(name), jpeg(i as u8 * 7)).unwrap();
            }
        }
        std::fs::write(dir.path().join("Training_set.csv"), csv).unwrap();
        Seed { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self) -> DatasetSpec {
        DatasetSpec {
            layout: Layout::Csv {
                train_csv: self.path("Training_set.csv"),
                train_dir: self.path("train"),
                test: None,
            },
            columns: Columns::default(),
            checks: CheckOptions::default(),
        }
    }

    fn load(&self) -> Loaded {
        load(&self.spec(), LoadOptions::default(), &NoProgress)
    }
}

fn kinds(report: &ValidationReport) -> Vec<(Severity, FindingKind)> {
    report
        .findings
        .iter()
        .map(|f| (f.severity, f.kind))
        .collect()
}

fn only(report: &ValidationReport, kind: FindingKind) -> &Finding {
    let matching: Vec<&Finding> = report.findings.iter().filter(|f| f.kind == kind).collect();
    assert_eq!(matching.len(), 1, "{:#?}", report.findings);
    matching[0]
}

#[test]
fn clean_seed_layout_loads_with_hashes_sorted_classes_and_row_order() {
    let seed = Seed::new(
        "filename,label",
        &["c.jpg,Ulcer", "a.jpg,Polyp", "b.jpg,Ulcer"],
    );
    std::fs::create_dir(seed.path("test")).unwrap();
    std::fs::write(seed.path("test/t1.jpg"), jpeg(200)).unwrap();
    std::fs::write(seed.path("Testing_set.csv"), "filename\nt1.jpg\n").unwrap();
    let mut spec = seed.spec();
    if let Layout::Csv { test, .. } = &mut spec.layout {
        *test = Some(TestSet {
            csv: seed.path("Testing_set.csv"),
            dir: seed.path("test"),
            truth: None,
        });
    }
    let loaded = load(&spec, LoadOptions { folds: Some(1) }, &NoProgress);
    assert!(
        loaded.report.findings.is_empty(),
        "{:#?}",
        loaded.report.findings
    );
    let ds = loaded.dataset;
    assert_eq!(ds.classes, ["Polyp", "Ulcer"]);
    let names: Vec<&str> = ds.train.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["c.jpg", "a.jpg", "b.jpg"]);
    assert_eq!(ds.train_label_names(), ["Ulcer", "Polyp", "Ulcer"]);
    assert_eq!(ds.train[0].label, Some(1));
    let bytes = std::fs::read(seed.path("train/c.jpg")).unwrap();
    assert_eq!(ds.train[0].hash, BlobHash::of(&bytes));
    assert_eq!(ds.train[0].size, bytes.len() as u64);
    assert!(ds.train[0].path.is_absolute());
    assert_eq!(ds.test.len(), 1);
    assert_eq!(ds.test[0].label, None);
    let share = loaded.report.distribution[1].share;
    assert!((share - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(loaded.report.imbalance_ratio(), Some(2.0));
}

#[test]
fn missing_file_names_the_file_and_line() {
    let seed = Seed::new("filename,label", &["a.jpg,Polyp", "missing.jpg,Polyp"]);
    let loaded = seed.load();
    let finding = only(&loaded.report, FindingKind::MissingFile);
    assert_eq!(finding.severity, Severity::Error);
    assert_eq!(finding.location.line, Some(3));
    assert_eq!(finding.location.file.as_deref(), Some("missing.jpg"));
    assert!(
        finding.to_string().contains("Training_set.csv line 3"),
        "{finding}"
    );
    assert_eq!(loaded.dataset.train.len(), 1);
    assert!(loaded.into_valid().is_err());
}

#[test]
fn paths_escaping_the_data_folder_are_errors() {
    let seed = Seed::new(
        "filename,label",
        &["a.jpg,Polyp", "../a.jpg,Polyp", "/etc/hostname,Polyp"],
    );
    let report = seed.load().report;
    let escapes: Vec<u64> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::PathEscapes)
        .map(|f| f.location.line.unwrap())
        .collect();
    assert_eq!(escapes, [3, 4]);
}

#[test]
fn missing_label_is_an_error() {
    let seed = Seed::new("filename,label", &["a.jpg,Polyp", "b.jpg,", "c.jpg"]);
    let report = seed.load().report;
    let lines: Vec<u64> = report.errors().map(|f| f.location.line.unwrap()).collect();
    assert_eq!(lines, [3, 4]);
    assert!(report.errors().all(|f| f.kind == FindingKind::MissingLabel));
}

#[test]
fn duplicate_filename_points_at_the_first() {
    let seed = Seed::new(
        "filename,label",
        &["a.jpg,Polyp", "b.jpg,Ulcer", "a.jpg,Ulcer"],
    );
    let loaded = seed.load();
    let finding = only(&loaded.report, FindingKind::DuplicateFilename);
    assert_eq!(finding.location.line, Some(4));
    assert!(finding.message.contains("first on line 2"), "{finding}");
    assert_eq!(loaded.dataset.train.len(), 2);
}

#[test]
fn class_with_fewer_rows_than_folds_is_an_error() {
    let rows: Vec<String> = (0..7)
        .map(|i| format!("n{i}.jpg,Normal"))
        .chain(["p.jpg,Polyp".into()])
        .collect();
    let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    let seed = Seed::new("filename,label", &rows);
    let report = load(&seed.spec(), LoadOptions { folds: Some(5) }, &NoProgress).report;
    let finding = only(&report, FindingKind::ClassTooSmall);
    assert!(
        finding
            .message
            .contains("\"Polyp\" has 1 rows, fewer than the 5 folds"),
        "{finding}"
    );
    assert_eq!(finding.location.line, Some(9));
    assert!(
        load(&seed.spec(), LoadOptions { folds: Some(1) }, &NoProgress)
            .report
            .findings
            .is_empty()
    );
}

#[test]
fn unreadable_csv_and_missing_column_are_errors() {
    let seed = Seed::new("filename,label", &["a.jpg,Polyp"]);
    let mut spec = seed.spec();
    if let Layout::Csv { train_csv, .. } = &mut spec.layout {
        *train_csv = seed.path("nope.csv");
    }
    let report = load(&spec, LoadOptions::default(), &NoProgress).report;
    assert_eq!(
        kinds(&report),
        [
            (Severity::Error, FindingKind::UnreadableCsv),
            (Severity::Error, FindingKind::NoTrainingRows)
        ]
    );
    assert!(report.findings[0].to_string().contains("nope.csv"));

    let seed = Seed::new("image,class", &["a.jpg,Polyp"]);
    let report = seed.load().report;
    let missing: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::MissingColumn)
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(missing.len(), 2, "{missing:?}");
    assert!(missing[0].contains("no column \"filename\""));
    assert!(missing[1].contains("no column \"label\""));
    let mut spec = seed.spec();
    spec.columns.filename = Some("image".into());
    spec.columns.label = Some("class".into());
    assert!(
        load(&spec, LoadOptions::default(), &NoProgress)
            .report
            .findings
            .is_empty()
    );
}

#[test]
fn bad_images_are_errors_or_skipped_warnings() {
    let seed = Seed::new(
        "filename,label",
        &[
            "a.jpg,Polyp",
            "zero.jpg,Polyp",
            "text.jpg,Polyp",
            "cut.jpg,Polyp",
        ],
    );
    std::fs::write(seed.path("train/zero.jpg"), b"").unwrap();
    std::fs::write(seed.path("train/text.jpg"), b"not an image at all").unwrap();
    let whole = jpeg(9);
    std::fs::write(seed.path("train/cut.jpg"), &whole[..whole.len() / 2]).unwrap();

    let strict = seed.load();
    let expected = [
        FindingKind::ZeroByteImage,
        FindingKind::UndecodableImage,
        FindingKind::TruncatedImage,
    ];
    assert_eq!(
        kinds(&strict.report),
        expected.map(|k| (Severity::Error, k))
    );
    assert!(strict.report.findings[0].message.contains("--skip-bad"));
    assert_eq!(strict.report.findings[0].location.line, Some(3));

    let mut spec = seed.spec();
    spec.checks.skip_bad = true;
    let lenient = load(&spec, LoadOptions::default(), &NoProgress);
    assert_eq!(
        kinds(&lenient.report),
        expected.map(|k| (Severity::Warning, k))
    );
    assert_eq!(lenient.report.skipped, 3);
    assert_eq!(lenient.dataset.train.len(), 1);
    assert!(lenient.into_valid().is_ok());
}

#[test]
fn deep_check_decodes_what_the_fast_check_passes() {
    let seed = Seed::new("filename,label", &["a.jpg,Polyp", "scan.jpg,Polyp"]);
    std::fs::write(
        seed.path("train/scan.jpg"),
        without_huffman_tables(&jpeg(3)),
    )
    .unwrap();
    assert!(seed.load().report.findings.is_empty());
    let mut spec = seed.spec();
    spec.checks.deep_check = true;
    let report = load(&spec, LoadOptions::default(), &NoProgress).report;
    assert_eq!(
        only(&report, FindingKind::UndecodableImage).location.line,
        Some(3)
    );
}

#[test]
fn tolerates_bom_crlf_quoted_commas_and_whitespace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("train")).unwrap();
    for name in ["a b.jpg", "c.jpg"] {
        std::fs::write(dir.path().join("train").join(name), jpeg(1)).unwrap();
    }
    std::fs::write(
        dir.path().join("t.csv"),
        b"\xEF\xBB\xBF filename ,label\r\n  a b.jpg ,\"Blood, fresh\" \r\n\"c.jpg\",Polyp  \r\n",
    )
    .unwrap();
    let spec = DatasetSpec {
        layout: Layout::Csv {
            train_csv: dir.path().join("t.csv"),
            train_dir: dir.path().join("train"),
            test: None,
        },
        columns: Columns::default(),
        checks: CheckOptions::default(),
    };
    let loaded = load(&spec, LoadOptions::default(), &NoProgress);
    assert!(
        loaded.report.findings.is_empty(),
        "{:#?}",
        loaded.report.findings
    );
    assert_eq!(loaded.dataset.classes, ["Blood, fresh", "Polyp"]);
    assert_eq!(loaded.dataset.train[0].name, "a b.jpg");
}

#[test]
fn labels_differing_only_in_case_are_warned_and_kept_apart() {
    let seed = Seed::new(
        "filename,label",
        &["a.jpg,Polyp", "b.jpg,polyp", "c.jpg,Polyp", "d.jpg,Ulcer"],
    );
    let loaded = seed.load();
    let finding = only(&loaded.report, FindingKind::LabelCase);
    assert_eq!(finding.severity, Severity::Warning);
    assert!(
        finding
            .message
            .contains("\"Polyp\" (2 rows, first on line 2)"),
        "{finding}"
    );
    assert!(
        finding
            .message
            .contains("\"polyp\" (1 rows, first on line 3)"),
        "{finding}"
    );
    assert_eq!(loaded.dataset.classes, ["Polyp", "Ulcer", "polyp"]);
}

#[test]
fn group_column_must_be_filled_and_have_enough_groups() {
    let seed = Seed::new(
        "filename,label,video_id",
        &[
            "a.jpg,Polyp,v1",
            "b.jpg,Polyp,",
            "c.jpg,Polyp,v1",
            "d.jpg,Polyp,v2",
        ],
    );
    let mut spec = seed.spec();
    spec.columns.group = Some("video_id".into());
    let loaded = load(&spec, LoadOptions { folds: Some(3) }, &NoProgress);
    assert_eq!(
        only(&loaded.report, FindingKind::MissingGroup)
            .location
            .line,
        Some(3)
    );
    let too_few = only(&loaded.report, FindingKind::TooFewGroups);
    assert!(
        too_few
            .message
            .contains("2 distinct groups, fewer than the 3 folds"),
        "{too_few}"
    );
    assert_eq!(loaded.dataset.train_groups().unwrap(), ["v1", "v1", "v2"]);
}

fn folder_dataset(root: &Path) {
    for (class, files) in [
        ("Polyp", &["p1.jpg", "p2.jpg"][..]),
        ("Angiectasia", &["a1.jpg"][..]),
    ] {
        std::fs::create_dir_all(root.join("labelled_images").join(class)).unwrap();
        for (i, f) in files.iter().enumerate() {
            std::fs::write(
                root.join("labelled_images").join(class).join(f),
                jpeg(i as u8),
            )
            .unwrap();
        }
    }
}

fn folder_spec(root: &Path, metadata: Option<PathBuf>, group: Option<&str>) -> DatasetSpec {
    DatasetSpec {
        layout: Layout::Folder {
            image_folder: root.join("labelled_images"),
            metadata,
        },
        columns: Columns {
            group: group.map(Into::into),
            ..Columns::default()
        },
        checks: CheckOptions::default(),
    }
}

#[test]
fn folder_layout_takes_labels_from_class_folders() {
    let dir = tempfile::tempdir().unwrap();
    folder_dataset(dir.path());
    let loaded = load(
        &folder_spec(dir.path(), None, None),
        LoadOptions::default(),
        &NoProgress,
    );
    assert!(
        loaded.report.findings.is_empty(),
        "{:#?}",
        loaded.report.findings
    );
    let names: Vec<&str> = loaded
        .dataset
        .train
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["Angiectasia/a1.jpg", "Polyp/p1.jpg", "Polyp/p2.jpg"]
    );
    assert_eq!(loaded.dataset.classes, ["Angiectasia", "Polyp"]);
    let report = load(
        &folder_spec(dir.path(), None, Some("video_id")),
        LoadOptions::default(),
        &NoProgress,
    )
    .report;
    assert!(
        only(&report, FindingKind::MissingColumn)
            .message
            .contains("--metadata")
    );
}

#[test]
fn folder_layout_with_semicolon_metadata_reads_groups_in_metadata_order() {
    let dir = tempfile::tempdir().unwrap();
    folder_dataset(dir.path());
    let metadata = dir.path().join("metadata.csv");
    std::fs::write(
        &metadata,
        "filename;video_id;frame_number;finding_class\n\
         p2.jpg;vid9;4;Polyp\n\
         a1.jpg;vid1;1;Ulcer\n\
         gone.jpg;vid1;2;Polyp\n",
    )
    .unwrap();
    let loaded = load(
        &folder_spec(dir.path(), Some(metadata), Some("video_id")),
        LoadOptions::default(),
        &NoProgress,
    );
    let report = &loaded.report;
    assert_eq!(
        kinds(report),
        [
            (Severity::Warning, FindingKind::LabelMismatch),
            (Severity::Error, FindingKind::MissingFile),
            (Severity::Warning, FindingKind::UnlistedImage),
        ]
    );
    assert_eq!(report.findings[0].location.line, Some(3));
    assert_eq!(report.findings[1].location.line, Some(4));
    assert_eq!(
        report.findings[2].location.file.as_deref(),
        Some("Polyp/p1.jpg")
    );
    let names: Vec<&str> = loaded
        .dataset
        .train
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["Polyp/p2.jpg", "Angiectasia/a1.jpg"]);
    assert_eq!(loaded.dataset.train_groups().unwrap(), ["vid9", "vid1"]);
    assert_eq!(loaded.dataset.train_label_names(), ["Polyp", "Angiectasia"]);
}
