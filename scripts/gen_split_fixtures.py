#!/usr/bin/env python3
"""Generate the fold-assignment fixtures that prove `foldtrain split` matches scikit-learn.

Each output CSV holds the input rows (filename, label, group) followed by one column per
splitter configuration, holding the fold (test-set index) that scikit-learn assigns to the
row. Column names encode the configuration: `skf_k5_s42` is StratifiedKFold(n_splits=5,
shuffle=True, random_state=42), `sgkf_k3_noshuffle` is StratifiedGroupKFold(n_splits=3,
shuffle=False), and so on.

Labels or groups that are all integers are passed to scikit-learn as integers, as
`pandas.read_csv` would hand them over; everything else is passed as strings.

Usage: python scripts/gen_split_fixtures.py coordinator/tests/fixtures/split
Needs only numpy and scikit-learn; the output is deterministic.
"""

import csv
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

KVASIR = [
    ("Normal clean mucosa", 34338),
    ("Ileocecal valve", 4189),
    ("Reduced mucosal view", 2906),
    ("Pylorus", 1529),
    ("Angiectasia", 866),
    ("Ulcer", 854),
    ("Foreign body", 776),
    ("Lymphangiectasia", 592),
    ("Erosion", 506),
    ("Blood - fresh", 446),
    ("Erythema", 159),
    ("Polyp", 55),
    ("Blood - hematin", 12),
    ("Ampulla of Vater", 10),
]


def folds_of(splitter, labels, groups=None):
    """Per-row fold index, from the test indices each split yields."""
    fold = np.full(len(labels), -1, dtype=np.int64)
    x = np.zeros((len(labels), 1))
    with warnings.catch_warnings():
        # Classes smaller than n_splits only warn in scikit-learn; the fixtures keep them.
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, test) in enumerate(splitter.split(x, labels, groups)):
            fold[test] = i
    assert (fold >= 0).all()
    return fold


def as_sklearn(values):
    """Integers when every value is one (as pandas would parse them), else strings."""
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return np.array(values, dtype=object).astype(str)


def write_case(out_dir, name, rows, configs):
    labels = as_sklearn([r[1] for r in rows])
    groups = as_sklearn([r[2] for r in rows])
    columns = []
    for kind, k, seed in configs:
        shuffle = seed is not None
        tag = f"s{seed}" if shuffle else "noshuffle"
        if kind == "skf":
            splitter = StratifiedKFold(n_splits=k, shuffle=shuffle, random_state=seed)
            columns.append((f"skf_k{k}_{tag}", folds_of(splitter, labels)))
        else:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=shuffle, random_state=seed)
            columns.append((f"sgkf_k{k}_{tag}", folds_of(splitter, labels, groups)))
    path = out_dir / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "label", "group"] + [c for c, _ in columns])
        for i, row in enumerate(rows):
            w.writerow(list(row) + [int(col[i]) for _, col in columns])
    print(f"{path}: {len(rows)} rows, {len(columns)} configurations")


def kvasir_like(rng, n):
    """Kvasir-Capsule's imbalance (73% majority), scaled down, rows in random order."""
    total = sum(c for _, c in KVASIR)
    labels = []
    for name, count in KVASIR:
        labels += [name] * max(5, round(count * n / total))
    rng.shuffle(labels)
    # Videos: runs of frames share an id; ids are hex strings like the real metadata's.
    video_ids = [f"{v:016x}" for v in rng.integers(0, 2**63, size=40)]
    rows = []
    for i, label in enumerate(labels):
        group = video_ids[int(rng.integers(0, 40))]
        rows.append((f"frame_{i:04d}.jpg", label, group))
    return rows


def exact_k(rng):
    """The smallest class has exactly five rows (k=5), another has seven."""
    labels = ["common"] * 23 + ["seven"] * 7 + ["five"] * 5
    rng.shuffle(labels)
    return [(f"img{i}.jpg", l, f"g{int(rng.integers(0, 12))}") for i, l in enumerate(labels)]


def many_classes(rng):
    """Forty classes of 3 to 25 rows; integer group ids whose numeric and text orders differ."""
    labels = []
    for c in rng.permutation(40):
        labels += [f"class_{c:02d}"] * int(rng.integers(3, 26))
    rng.shuffle(labels)
    return [(f"m{i}.jpg", l, str(int(rng.integers(1, 120)))) for i, l in enumerate(labels)]


def string_order(rng):
    """Labels whose sorted order differs from their order of first appearance."""
    names = ["zebra", "Mango", "apple", "Éclair", "banana", "Zulu", "apple pie"]
    counts = [30, 12, 9, 6, 20, 4, 7]
    labels = []
    for name, count in zip(names, counts):
        labels += [name] * count
    labels = labels[:1] + list(rng.permutation(labels[1:]))
    return [(f"s{i}.png", l, f"video-{int(rng.integers(0, 25))}") for i, l in enumerate(labels)]


def numeric_labels(rng):
    """Integer labels 0..11 (numeric order differs from text order) and integer groups."""
    labels = list(rng.choice(12, size=150, p=np.linspace(3, 1, 12) / np.linspace(3, 1, 12).sum()))
    labels += list(range(12)) * 3
    rng.shuffle(labels)
    return [(f"n{i}.jpg", str(l), str(int(rng.integers(0, 30)) * 7)) for i, l in enumerate(labels)]


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "coordinator/tests/fixtures/split")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)
    write_case(out_dir, "kvasir_like", kvasir_like(rng, 420), [
        ("skf", 5, 42), ("skf", 5, 0), ("skf", 3, 7), ("skf", 10, 123), ("skf", 5, None),
        ("skf", 5, 2**32 - 1), ("sgkf", 5, 42), ("sgkf", 3, 1), ("sgkf", 5, None),
        ("sgkf", 10, 2024),
    ])
    write_case(out_dir, "exact_k", exact_k(rng), [
        ("skf", 5, 42), ("skf", 5, 1), ("skf", 7, 3), ("skf", 5, None), ("sgkf", 5, 42),
        ("sgkf", 4, 9),
    ])
    write_case(out_dir, "many_classes", many_classes(rng), [
        ("skf", 3, 42), ("skf", 5, 11), ("skf", 2, 5), ("skf", 3, None), ("sgkf", 5, 42),
        ("sgkf", 8, 77), ("sgkf", 3, None),
    ])
    write_case(out_dir, "string_order", string_order(rng), [
        ("skf", 2, 42), ("skf", 3, 0), ("skf", 4, 99), ("skf", 4, None), ("sgkf", 4, 42),
        ("sgkf", 3, 5),
    ])
    write_case(out_dir, "numeric_labels", numeric_labels(rng), [
        ("skf", 3, 42), ("skf", 6, 8), ("sgkf", 3, 42), ("sgkf", 6, 8), ("sgkf", 6, None),
    ])
    (out_dir / "README.md").write_text(
        "# Fold fixtures from scikit-learn\n\n"
        "Made by `scripts/gen_split_fixtures.py` with "
        f"scikit-learn {sklearn.__version__} and numpy {np.__version__}.\n"
        "Each CSV holds the input rows (filename, label, group) and one column per\n"
        "splitter configuration with the fold scikit-learn assigned to each row:\n"
        "`skf_k5_s42` is `StratifiedKFold(n_splits=5, shuffle=True, random_state=42)`,\n"
        "`sgkf_k3_noshuffle` is `StratifiedGroupKFold(n_splits=3, shuffle=False)`.\n"
        "Columns whose values are all integers were passed as integers, as\n"
        "`pandas.read_csv` would pass them.\n\n"
        "Regenerate: `python scripts/gen_split_fixtures.py coordinator/tests/fixtures/split`\n"
    )

if __name__ == "__main__":
    main()
