//! A submitted job before it is stored: validation, and the fold of every training row.

use std::collections::HashMap;

use foldtrain_proto::config::SplitConfig;
use foldtrain_proto::{FoldIndex, FoldTask, ImageRef, JobConfig, JobId};

use crate::error::{CoordinatorError, Result};
use crate::split;
use crate::store::JobRecord;

/// What a client submits: the manifest and the resolved config.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub name: String,
    pub config: JobConfig,
    /// Distinct class names in sorted order; image labels index into them.
    pub class_names: Vec<String>,
    pub train: Vec<ImageRef>,
    pub test: Vec<ImageRef>,
    /// What the client spent before submitting, as it reported it.
    pub client: ClientSeconds,
}

/// What the submitting client spent before the job existed, for the job's time
/// breakdown; 0 where it did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClientSeconds {
    /// Reading, checking and hashing the data set.
    pub hashing: f64,
    /// Uploading the images the coordinator lacked.
    pub upload: f64,
}

impl JobSpec {
    /// Rejects a manifest no fold could train on, naming the row and value at fault.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let classes = &self.class_names;
        if classes.len() < 2 {
            return Err(CoordinatorError::invalid(format!(
                "class_names: need at least 2 classes, got {}",
                classes.len()
            )));
        }
        if let Some(empty) = classes.iter().position(String::is_empty) {
            return Err(CoordinatorError::invalid(format!(
                "class_names[{empty}] is empty"
            )));
        }
        if let Some(w) = classes.windows(2).find(|w| w[0] >= w[1]) {
            return Err(CoordinatorError::invalid(format!(
                "class_names must be distinct and sorted: {:?} comes before {:?}",
                w[0], w[1]
            )));
        }
        if self.train.is_empty() {
            return Err(CoordinatorError::invalid("train: no training images"));
        }
        for (row, image) in self.train.iter().enumerate() {
            match image.label {
                None => {
                    return Err(CoordinatorError::invalid(format!(
                        "train row {row} ({}): missing label",
                        image.name
                    )));
                }
                Some(l) if l as usize >= classes.len() => {
                    return Err(CoordinatorError::invalid(format!(
                        "train row {row} ({}): label {l} out of range for {} classes",
                        image.name,
                        classes.len()
                    )));
                }
                Some(_) => {}
            }
        }
        // Test labels are optional (the truth, when the user has it), but must be classes.
        if let Some((row, image, l)) = self.test.iter().enumerate().find_map(|(row, i)| {
            i.label
                .filter(|&l| l as usize >= classes.len())
                .map(|l| (row, i, l))
        }) {
            return Err(CoordinatorError::invalid(format!(
                "test row {row} ({}): label {l} out of range for {} classes",
                image.name,
                classes.len()
            )));
        }
        unique_names("train", &self.train)?;
        unique_names("test", &self.test)?;
        Ok(())
    }

    /// The fold of every training row (see [`assign_folds`]).
    pub fn folds(&self) -> Result<Vec<u32>> {
        let labels: Vec<&str> = self
            .train
            .iter()
            .map(|i| self.class_names[i.label.unwrap_or_default() as usize].as_str())
            .collect();
        let groups = match &self.config.split.group_column {
            None => None,
            Some(column) => {
                if let Some((row, image)) = self
                    .train
                    .iter()
                    .enumerate()
                    .find(|(_, i)| i.group.is_empty())
                {
                    return Err(CoordinatorError::invalid(format!(
                        "split.group_column is {column:?} but train row {row} ({}) has no group",
                        image.name
                    )));
                }
                Some(
                    self.train
                        .iter()
                        .map(|i| i.group.as_str())
                        .collect::<Vec<_>>(),
                )
            }
        };
        assign_folds(&labels, groups.as_deref(), &self.config.split)
    }

    /// The stored form of this job, with its folds computed.
    pub fn into_record(self, id: JobId, created_ms: i64) -> Result<JobRecord> {
        self.validate()?;
        let fold_of = self.folds()?;
        Ok(JobRecord {
            id,
            name: self.name,
            state: crate::store::JobState::Queued,
            message: String::new(),
            config: self.config,
            class_names: self.class_names,
            train: self.train,
            test: self.test,
            fold_of,
            created_ms,
            finished_ms: None,
            summary_json: String::new(),
        })
    }
}

fn unique_names(split: &str, images: &[ImageRef]) -> Result<()> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(images.len());
    for (row, image) in images.iter().enumerate() {
        if let Some(first) = seen.insert(image.name.as_str(), row) {
            return Err(CoordinatorError::invalid(format!(
                "{split} rows {first} and {row} share the name {:?}",
                image.name
            )));
        }
    }
    Ok(())
}

/// The fold of every row, exactly as scikit-learn's `StratifiedKFold` (or, with groups,
/// `StratifiedGroupKFold`) assigns it for the same labels, order and seed.
pub fn assign_folds(
    labels: &[&str],
    groups: Option<&[&str]>,
    config: &SplitConfig,
) -> Result<Vec<u32>> {
    Ok(match groups {
        Some(groups) => split::stratified_group_folds(
            labels,
            groups,
            config.folds,
            config.shuffle,
            config.seed,
        )?,
        None => split::stratified_folds(labels, config.folds, config.shuffle, config.seed)?,
    })
}

/// The task of one fold: its validation rows are the fold's rows, in input order; every
/// other training row trains.
pub fn fold_task(
    job: &JobRecord,
    fold: FoldIndex,
    attempt: foldtrain_proto::AttemptId,
    device_index: i32,
) -> FoldTask {
    let (val, train): (Vec<_>, Vec<_>) = job
        .train
        .iter()
        .zip(&job.fold_of)
        .partition(|(_, f)| **f == fold.0);
    FoldTask {
        job_id: job.id.clone(),
        fold,
        attempt,
        config: job.config.clone(),
        class_names: job.class_names.clone(),
        train: train.into_iter().map(|(i, _)| i.clone()).collect(),
        val: val.into_iter().map(|(i, _)| i.clone()).collect(),
        test: job.test.clone(),
        resume: None,
        pretrained: None,
        device_index: u32::try_from(device_index).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldtrain_proto::BlobHash;

    fn image(name: &str, label: Option<u32>, group: &str) -> ImageRef {
        ImageRef {
            hash: BlobHash::of(name.as_bytes()),
            name: name.into(),
            label,
            group: group.into(),
            size: 1,
        }
    }

    fn spec(n: usize) -> JobSpec {
        JobSpec {
            name: "t".into(),
            config: JobConfig::default(),
            class_names: vec!["a".into(), "b".into()],
            train: (0..n)
                .map(|i| {
                    image(
                        &format!("{i}.jpg"),
                        Some((i % 2) as u32),
                        &format!("g{}", i / 2),
                    )
                })
                .collect(),
            test: vec![image("x.jpg", None, "")],
            client: Default::default(),
        }
    }

    #[test]
    fn folds_match_the_split_module() {
        let s = spec(20);
        let folds = s.folds().unwrap();
        let labels: Vec<&str> = s
            .train
            .iter()
            .map(|i| if i.label == Some(0) { "a" } else { "b" })
            .collect();
        assert_eq!(
            folds,
            split::stratified_folds(&labels, 5, true, 42).unwrap()
        );
        for k in 0..5 {
            assert_eq!(folds.iter().filter(|&&f| f == k).count(), 4);
        }
    }

    #[test]
    fn groups_never_straddle_folds() {
        let mut s = spec(40);
        s.config.split.group_column = Some("video".into());
        let folds = s.folds().unwrap();
        for pair in folds.chunks(2) {
            assert_eq!(pair[0], pair[1], "rows of one group split across folds");
        }
        s.train[3].group.clear();
        let err = s.folds().unwrap_err().to_string();
        assert!(err.contains("train row 3 (3.jpg) has no group"), "{err}");
    }

    #[test]
    fn malformed_specs_name_the_fault() {
        let mut s = spec(10);
        s.class_names = vec!["b".into(), "a".into()];
        assert!(s.validate().unwrap_err().to_string().contains("sorted"));
        let mut s = spec(10);
        let mut t = s.clone();
        t.test.push(image("t.jpg", Some(9), ""));
        let err = t.validate().unwrap_err().to_string();
        assert!(err.contains("(t.jpg): label 9 out of range"), "{err}");
        s.train[4].label = Some(7);
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("train row 4 (4.jpg): label 7 out of range"),
            "{err}"
        );
        let mut s = spec(10);
        s.train[6].name = "2.jpg".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("train rows 2 and 6 share the name \"2.jpg\""),
            "{err}"
        );
        let mut s = spec(10);
        s.config.split.folds = 1;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("split.folds")
        );
    }

    #[test]
    fn a_fold_task_validates_on_its_own_rows() {
        let s = spec(20);
        let record = s.into_record(JobId::new("j"), 0).unwrap();
        let task = fold_task(&record, FoldIndex(2), foldtrain_proto::AttemptId(9), -1);
        let expected: Vec<&str> = record
            .val_rows(FoldIndex(2))
            .into_iter()
            .map(|r| record.train[r].name.as_str())
            .collect();
        assert_eq!(
            task.val.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(task.train.len() + task.val.len(), 20);
        assert_eq!(task.device_index, None);
        assert_eq!(task.test.len(), 1);
    }
}
