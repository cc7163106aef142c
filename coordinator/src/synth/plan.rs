//! What to generate before any pixel is drawn: how many frames of each class (Kvasir-
//! Capsule's imbalance, scaled down), which video each frame comes from, and the row order.

use super::SynthError;
use super::rng::Rng;

/// The 14 Kvasir-Capsule classes and their frame counts in the full data set.
pub const KVASIR_CLASSES: [(&str, usize); 14] = [
    ("Normal clean mucosa", 34_338),
    ("Ileocecal valve", 4_189),
    ("Reduced mucosal view", 2_906),
    ("Pylorus", 1_529),
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
];

/// Index of "Normal clean mucosa" in `KVASIR_CLASSES`.
pub(crate) const NORMAL: usize = 0;

/// Frames per class for `total` training frames: each minority class gets its scaled
/// share but at least `min_per_class`, and the normal class takes the rest.
pub fn class_counts(total: usize, min_per_class: usize) -> Result<Vec<usize>, SynthError> {
    let try_counts = |total: usize| -> Option<Vec<usize>> {
        let full: usize = KVASIR_CLASSES.iter().map(|(_, c)| c).sum();
        let mut counts: Vec<usize> = KVASIR_CLASSES
            .iter()
            .map(|&(_, c)| ((c * total + full / 2) / full).max(min_per_class))
            .collect();
        let others: usize = counts[1..].iter().sum();
        counts[NORMAL] = total.checked_sub(others)?;
        (counts[NORMAL] >= min_per_class).then_some(counts)
    };
    try_counts(total).ok_or_else(|| {
        let min = (total..)
            .find(|&n| try_counts(n).is_some())
            .unwrap_or(total);
        SynthError::TooFewImages {
            train: total,
            min,
            per_class: min_per_class,
        }
    })
}

/// One frame to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub class: usize,
    /// Index into the plan's videos; frames of one video share a look.
    pub video: usize,
    pub defect: Option<Defect>,
}

/// A deliberately broken file, to exercise validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    ZeroBytes,
    Truncated,
    NotAnImage,
}

#[derive(Debug)]
pub(crate) struct Plan {
    pub train: Vec<Frame>,
    pub test: Vec<Frame>,
    /// Training videos come first, then test videos.
    pub videos: usize,
    pub train_videos: usize,
}

/// `n` frames of `class` from `video`, without defects.
fn clip_of(class: usize, video: usize, n: usize) -> impl Iterator<Item = Frame> {
    (0..n).map(move |_| Frame {
        class,
        video,
        defect: None,
    })
}

/// Splits frames into videos: each video has one dominant class, findings padded with
/// some normal frames, and the remaining normal frames in normal-only videos.
pub(crate) fn plan(counts: &[usize], test: usize, defects: bool, rng: &mut Rng) -> Plan {
    let (mut train, train_videos) = train_frames(counts, rng);
    rng.shuffle(&mut train);
    if defects {
        insert_defects(&mut train, rng);
    }
    let (test, videos) = test_frames(counts, test, train_videos, rng);
    Plan {
        train,
        test,
        videos,
        train_videos,
    }
}

/// The training frames in video order, and the number of videos they come from.
fn train_frames(counts: &[usize], rng: &mut Rng) -> (Vec<Frame>, usize) {
    let mut train = Vec::new();
    let mut video = 0;
    let mut normal_left = counts[NORMAL];
    for (class, &count) in counts.iter().enumerate().skip(1) {
        let mut left = count;
        // Rare classes come in short clips so that they reach several folds.
        let longest = if count < 20 { 3 } else { 6 };
        while left > 0 {
            let clip = rng.int(1, longest).min(left);
            left -= clip;
            train.extend(clip_of(class, video, clip));
            let padding = rng.int(0, clip.saturating_sub(1)).min(normal_left);
            normal_left -= padding;
            train.extend(clip_of(NORMAL, video, padding));
            video += 1;
        }
    }
    while normal_left > 0 {
        let clip = rng.int(4, 10).min(normal_left);
        normal_left -= clip;
        train.extend(clip_of(NORMAL, video, clip));
        video += 1;
    }
    (train, video)
}

/// Puts four broken files at random places, each in the video of a random frame.
fn insert_defects(train: &mut Vec<Frame>, rng: &mut Rng) {
    for defect in [
        Defect::ZeroBytes,
        Defect::ZeroBytes,
        Defect::Truncated,
        Defect::NotAnImage,
    ] {
        let at = rng.int(0, train.len());
        let video = train[rng.int(0, train.len() - 1)].video;
        train.insert(
            at,
            Frame {
                class: NORMAL,
                video,
                defect: Some(defect),
            },
        );
    }
}

/// `test` frames in shuffled order, following the training distribution, from videos of
/// their own numbered from `first_video`; also the video count after them.
fn test_frames(
    counts: &[usize],
    test: usize,
    first_video: usize,
    rng: &mut Rng,
) -> (Vec<Frame>, usize) {
    let total: usize = counts.iter().sum();
    let mut video = first_video;
    let mut frames = Vec::with_capacity(test);
    while frames.len() < test {
        let clip = rng.int(3, 8).min(test - frames.len());
        for _ in 0..clip {
            let mut pick = rng.int(0, total - 1);
            let class = counts.iter().position(|&c| {
                let hit = pick < c;
                pick = pick.saturating_sub(c);
                hit
            });
            frames.push(Frame {
                class: class.unwrap_or(NORMAL),
                video,
                defect: None,
            });
        }
        video += 1;
    }
    rng.shuffle(&mut frames);
    (frames, video)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_kvasir_with_a_floor() {
        let counts = class_counts(300, 6).unwrap();
        assert_eq!(counts.iter().sum::<usize>(), 300);
        assert!(counts.iter().all(|&c| c >= 6), "{counts:?}");
        assert!(counts[NORMAL] as f64 / 300.0 > 0.55, "{counts:?}");
        assert!(
            counts[1] > counts[3] && counts[3] > counts[13],
            "{counts:?}"
        );
        let big = class_counts(47_238, 6).unwrap();
        assert_eq!(big, KVASIR_CLASSES.map(|(_, c)| c));
        let err = class_counts(50, 6).unwrap_err().to_string();
        assert!(err.contains("at least 86"), "{err}");
    }

    #[test]
    fn plan_keeps_counts_and_video_structure() {
        let counts = class_counts(200, 6).unwrap();
        let plan = plan(&counts, 40, true, &mut Rng::new(3));
        assert_eq!(plan.train.len(), 204);
        assert_eq!(plan.train.iter().filter(|f| f.defect.is_some()).count(), 4);
        for (class, &count) in counts.iter().enumerate() {
            let got = plan
                .train
                .iter()
                .filter(|f| f.class == class && f.defect.is_none())
                .count();
            assert_eq!(got, count, "class {class}");
        }
        assert_eq!(plan.test.len(), 40);
        assert!(plan.test.iter().all(|f| f.video >= plan.train_videos));
        assert!(plan.train_videos >= 20, "{}", plan.train_videos);
        // Every video has one dominant class: its findings, or normal only.
        for v in 0..plan.train_videos {
            let classes: Vec<usize> = plan
                .train
                .iter()
                .filter(|f| f.video == v && f.defect.is_none())
                .map(|f| f.class)
                .collect();
            let findings = classes.iter().filter(|&&c| c != NORMAL).count();
            assert!(
                findings == 0 || findings * 2 >= classes.len(),
                "video {v}: {classes:?}"
            );
        }
    }
}
