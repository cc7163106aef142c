//! A finished job's results folder as a model: its config, its classes and every fold's
//! best weights, checked before any work starts.

use std::path::{Path, PathBuf};

use foldtrain_proto::JobConfig;

use super::PredictError;

/// What `foldtrain run --out` or `foldtrain results` wrote, read as a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDir {
    pub dir: PathBuf,
    /// The training job's resolved config: architecture, image size, resize, normalisation.
    pub config: JobConfig,
    /// The class names, sorted, as the results' CSVs list them.
    pub class_names: Vec<String>,
    /// `folds/<k>/best.safetensors`, in fold order.
    pub weights: Vec<PathBuf>,
}

impl ModelDir {
    /// Reads `config.toml` and the classes, and checks that every fold's weights are there.
    pub fn open(dir: &Path) -> Result<Self, PredictError> {
        let fail = |message: String| PredictError::ModelDir {
            dir: dir.to_path_buf(),
            message,
        };
        if !dir.is_dir() {
            return Err(fail("not a folder".into()));
        }
        let config_path = dir.join("config.toml");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            fail(format!(
                "cannot read {}: {e}; pass the folder `foldtrain run --out` or `foldtrain results` wrote",
                config_path.display()
            ))
        })?;
        let config = JobConfig::from_toml(&text)
            .map_err(|e| fail(format!("{}: {e}", config_path.display())))?;
        let class_names = class_names(dir).map_err(fail)?;
        let weights: Vec<PathBuf> = (0..config.split.folds)
            .map(|k| {
                dir.join("folds")
                    .join(k.to_string())
                    .join("best.safetensors")
            })
            .collect();
        let missing: Vec<PathBuf> = weights.iter().filter(|w| !w.is_file()).cloned().collect();
        if !missing.is_empty() {
            return Err(PredictError::MissingWeights { missing });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            class_names,
            weights,
        })
    }
}

/// The class columns of `probabilities.csv` (after `filename`), or else of `oof.csv` (after
/// `filename,label,fold,predicted`).
fn class_names(dir: &Path) -> Result<Vec<String>, String> {
    for (file, fixed) in [("probabilities.csv", 1), ("oof.csv", 4)] {
        let path = dir.join(file);
        let Ok(mut reader) = csv::Reader::from_path(&path) else {
            continue;
        };
        let headers = reader
            .headers()
            .map_err(|e| format!("cannot read the header of {}: {e}", path.display()))?;
        let classes: Vec<String> = headers.iter().skip(fixed).map(str::to_owned).collect();
        if classes.len() < 2 {
            return Err(format!(
                "{} names {} class column(s); expected at least 2",
                path.display(),
                classes.len()
            ));
        }
        return Ok(classes);
    }
    Err("has neither probabilities.csv nor oof.csv, which name the classes".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir(folds: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JobConfig::default();
        config.split.folds = folds;
        std::fs::write(dir.path().join("config.toml"), config.to_toml()).unwrap();
        std::fs::write(dir.path().join("probabilities.csv"), "filename,cat,dog\n").unwrap();
        for k in 0..folds {
            let fold = dir.path().join(format!("folds/{k}"));
            std::fs::create_dir_all(&fold).unwrap();
            std::fs::write(fold.join("best.safetensors"), b"weights").unwrap();
        }
        dir
    }

    #[test]
    fn a_results_folder_opens_as_a_model() {
        let dir = model_dir(3);
        let model = ModelDir::open(dir.path()).unwrap();
        assert_eq!(model.class_names, ["cat", "dog"]);
        assert_eq!(model.weights.len(), 3);
        assert!(model.weights[2].ends_with("folds/2/best.safetensors"));
    }

    #[test]
    fn missing_weights_and_config_are_named() {
        let dir = model_dir(3);
        std::fs::remove_file(dir.path().join("folds/1/best.safetensors")).unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("folds/1/best.safetensors"), "{err}");
        assert!(!err.contains("folds/0/"), "{err}");

        std::fs::remove_file(dir.path().join("config.toml")).unwrap();
        let err = ModelDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
    }
}
