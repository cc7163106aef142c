//! Row-for-row comparison with folds that scikit-learn itself assigned
//! (tests/fixtures/split, made by scripts/gen_split_fixtures.py), and property tests.

use std::path::PathBuf;

use proptest::prelude::*;

use super::{stratified_folds, stratified_group_folds};

struct Fixture {
    name: String,
    labels: Vec<String>,
    groups: Vec<String>,
    /// (column name, folds scikit-learn assigned)
    expected: Vec<(String, Vec<u32>)>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/split");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    paths.sort();
    paths.iter().map(|p| read_fixture(p)).collect()
}

fn read_fixture(path: &std::path::Path) -> Fixture {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let mut fixture = Fixture {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        labels: Vec::new(),
        groups: Vec::new(),
        expected: headers
            .iter()
            .skip(3)
            .map(|h| (h.to_owned(), Vec::new()))
            .collect(),
    };
    for record in reader.records() {
        let record = record.unwrap();
        fixture.labels.push(record[1].to_owned());
        fixture.groups.push(record[2].to_owned());
        for (i, (_, folds)) in fixture.expected.iter_mut().enumerate() {
            folds.push(record[3 + i].parse().unwrap());
        }
    }
    fixture
}

/// `skf_k5_s42` -> (false, 5, Some(42)); `sgkf_k3_noshuffle` -> (true, 3, None).
fn parse_column(column: &str) -> (bool, u32, Option<u64>) {
    let parts: Vec<&str> = column.split('_').collect();
    let grouped = match parts[0] {
        "skf" => false,
        "sgkf" => true,
        other => panic!("unknown splitter {other}"),
    };
    let k = parts[1].strip_prefix('k').unwrap().parse().unwrap();
    let seed = parts[2].strip_prefix('s').map(|s| s.parse().unwrap());
    (grouped, k, seed)
}

#[test]
fn fixtures_cover_the_required_cases() {
    let all = fixtures();
    let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    for required in [
        "kvasir_like.csv",
        "exact_k.csv",
        "many_classes.csv",
        "string_order.csv",
    ] {
        assert!(
            names.contains(&required),
            "missing fixture {required}: {names:?}"
        );
    }
    let columns: usize = all.iter().map(|f| f.expected.len()).sum();
    assert!(columns >= 30, "only {columns} configurations");
}

#[test]
fn stratified_kfold_matches_scikit_learn_row_for_row() {
    let mut checked = 0;
    for fixture in fixtures() {
        for (column, expected) in &fixture.expected {
            let (grouped, k, seed) = parse_column(column);
            if grouped {
                continue;
            }
            let got = stratified_folds(&fixture.labels, k, seed.is_some(), seed.unwrap_or(0))
                .unwrap_or_else(|e| panic!("{} {column}: {e}", fixture.name));
            assert_eq!(&got, expected, "{} {column}", fixture.name);
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} StratifiedKFold configurations"
    );
}

#[test]
fn stratified_group_kfold_matches_scikit_learn_row_for_row() {
    let mut checked = 0;
    for fixture in fixtures() {
        for (column, expected) in &fixture.expected {
            let (grouped, k, seed) = parse_column(column);
            if !grouped {
                continue;
            }
            let shuffle = seed.is_some();
            let got = stratified_group_folds(
                &fixture.labels,
                &fixture.groups,
                k,
                shuffle,
                seed.unwrap_or(0),
            )
            .unwrap_or_else(|e| panic!("{} {column}: {e}", fixture.name));
            assert_eq!(&got, expected, "{} {column}", fixture.name);
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} StratifiedGroupKFold configurations"
    );
}

fn labels_strategy() -> impl Strategy<Value = (Vec<String>, u32, u64)> {
    (2u32..8, 1usize..6, any::<u32>()).prop_flat_map(|(k, n_classes, seed)| {
        // Every class gets at least k rows, the case scikit-learn splits without warning.
        let per_class = proptest::collection::vec(k as usize..40, n_classes);
        (per_class, Just(k), Just(u64::from(seed)), any::<u64>()).prop_map(
            |(counts, k, seed, order_seed)| {
                let mut labels: Vec<String> = counts
                    .iter()
                    .enumerate()
                    .flat_map(|(c, &n)| std::iter::repeat_n(format!("class{c}"), n))
                    .collect();
                // A cheap deterministic interleaving so classes are not in blocks.
                let len = labels.len() as u64;
                for i in (1..len).rev() {
                    let j = (order_seed.wrapping_mul(i + 7).rotate_left(17) ^ i) % (i + 1);
                    labels.swap(i as usize, j as usize);
                }
                (labels, k, seed)
            },
        )
    })
}

proptest! {
    #[test]
    fn each_class_count_per_fold_differs_by_at_most_one((labels, k, seed) in labels_strategy(), shuffle in any::<bool>()) {
        let folds = stratified_folds(&labels, k, shuffle, seed).unwrap();
        prop_assert_eq!(folds.len(), labels.len());
        let mut classes: Vec<&String> = labels.iter().collect();
        classes.sort();
        classes.dedup();
        for class in classes {
            let mut per_fold = vec![0usize; k as usize];
            for (label, &fold) in labels.iter().zip(&folds) {
                prop_assert!(fold < k);
                if label == class {
                    per_fold[fold as usize] += 1;
                }
            }
            let (min, max) = (per_fold.iter().min().unwrap(), per_fold.iter().max().unwrap());
            prop_assert!(max - min <= 1, "class {} per fold {:?}", class, per_fold);
        }
    }
}
