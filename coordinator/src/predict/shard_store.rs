//! Finished shards on disk, and the final CSVs merged from them by streaming: memory holds
//! one shard at a time however many images there are.
//!
//! A shard file is its rows × classes probabilities as little-endian f32, NaN for an image
//! that could not be used (those are listed in `skipped.csv` instead).

use std::io::Write;
use std::path::{Path, PathBuf};

use foldtrain_proto::ShardTask;
use foldtrain_proto::metrics::argmax_rows;
use foldtrain_proto::wire_events::f32_values;

use super::PredictError;
use super::dispatch::{RowOutcome, ShardSink};
use crate::error::CoordinatorError;
use crate::store::{write_atomic, write_atomic_with};

/// Where finished shards are kept until the merge.
pub struct ShardStore {
    dir: PathBuf,
    classes: usize,
    /// Images left out: (shard, position in the shard, message).
    skipped: Vec<(u64, usize, String)>,
}

/// What the merge wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    pub predicted: usize,
    /// Each image left out, with why, in input order.
    pub skipped: Vec<(String, String)>,
    pub files: Vec<String>,
}

impl ShardStore {
    pub fn new(dir: impl Into<PathBuf>, classes: usize) -> Self {
        Self {
            dir: dir.into(),
            classes,
            skipped: Vec::new(),
        }
    }

    fn path(&self, shard: u64) -> PathBuf {
        self.dir.join(format!("shard-{shard:06}.f32"))
    }

    /// Writes `predictions.csv`, `probabilities.csv` and, when images were left out,
    /// `skipped.csv` into `out`, from the shards in order: rows in input order.
    pub fn merge(
        &self,
        shards: &[ShardTask],
        class_names: &[String],
        out: &Path,
    ) -> Result<Merged, PredictError> {
        let csv_err = |e: csv::Error| std::io::Error::other(e.to_string());
        let classes = self.classes;
        let mut predicted = 0;
        let mut probabilities_header = vec!["filename"];
        probabilities_header.extend(class_names.iter().map(String::as_str));
        let predictions_path = out.join("predictions.csv");
        // Both files stream from the same pass over the shards.
        write_atomic_with(&predictions_path, |predictions| {
            write_atomic_with(&out.join("probabilities.csv"), |probabilities| {
                let mut labels = writer(predictions);
                let mut probs = writer(probabilities);
                labels
                    .write_record(["filename", "label"])
                    .map_err(csv_err)?;
                probs.write_record(&probabilities_header).map_err(csv_err)?;
                for task in shards {
                    let values = read_f32(&self.path(task.shard))?;
                    if values.len() != task.images.len() * classes {
                        return Err(std::io::Error::other(format!(
                            "shard {} holds {} values, expected {}",
                            task.shard,
                            values.len(),
                            task.images.len() * classes
                        )));
                    }
                    let best = argmax_rows(&values, classes);
                    for ((image, row), label) in task
                        .images
                        .iter()
                        .zip(values.chunks_exact(classes))
                        .zip(best)
                    {
                        if row[0].is_nan() {
                            continue;
                        }
                        let mut record = vec![image.name.clone()];
                        record.extend(row.iter().map(|p| p.to_string()));
                        probs.write_record(&record).map_err(csv_err)?;
                        labels
                            .write_record([image.name.as_str(), &class_names[label as usize]])
                            .map_err(csv_err)?;
                        predicted += 1;
                    }
                }
                probs.flush()?;
                labels.flush()
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        })?;
        let mut files = vec!["predictions.csv".to_owned(), "probabilities.csv".to_owned()];
        let skipped = self.skipped_in_order(shards);
        if !skipped.is_empty() {
            let mut w = writer(Vec::new());
            w.write_record(["filename", "error"])
                .map_err(|e| CoordinatorError::encode("csv", e))?;
            for (name, message) in &skipped {
                w.write_record([name, message])
                    .map_err(|e| CoordinatorError::encode("csv", e))?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| CoordinatorError::encode("csv", e))?;
            write_atomic(&out.join("skipped.csv"), &bytes)?;
            files.push("skipped.csv".to_owned());
        }
        Ok(Merged {
            predicted,
            skipped,
            files,
        })
    }

    fn skipped_in_order(&self, shards: &[ShardTask]) -> Vec<(String, String)> {
        let mut skipped = self.skipped.clone();
        skipped.sort_by_key(|(shard, i, _)| (*shard, *i));
        skipped
            .into_iter()
            .map(|(shard, i, message)| (shards[shard as usize].images[i].name.clone(), message))
            .collect()
    }
}

impl ShardSink for ShardStore {
    fn finished(&mut self, task: &ShardTask, rows: Vec<RowOutcome>) -> Result<(), PredictError> {
        let mut bytes = Vec::with_capacity(rows.len() * self.classes * 4);
        for (i, row) in rows.into_iter().enumerate() {
            match row {
                RowOutcome::Probabilities(p) if p.len() == self.classes => {
                    bytes.extend(p.iter().flat_map(|v| v.to_le_bytes()));
                }
                RowOutcome::Probabilities(p) => {
                    return Err(PredictError::Shard {
                        shard: task.shard,
                        message: format!(
                            "image {} has {} probabilities for {} classes",
                            task.images[i].name,
                            p.len(),
                            self.classes
                        ),
                    });
                }
                RowOutcome::Bad(message) => {
                    bytes.extend((0..self.classes).flat_map(|_| f32::NAN.to_le_bytes()));
                    self.skipped.push((task.shard, i, message));
                }
            }
        }
        write_atomic(&self.path(task.shard), &bytes)?;
        Ok(())
    }
}

fn writer<W: Write>(w: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(w)
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    Ok(f32_values(&std::fs::read(path)?))
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::{BlobHash, ImageRef};

    use super::*;
    use crate::predict::cut_shards;
    use crate::predict::dispatch::test_template;

    #[test]
    fn shards_merge_into_csvs_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let template = test_template();
        let images = ["x.png", "y.png", "sub/z.png"]
            .iter()
            .map(|name| ImageRef {
                hash: BlobHash::of(name.as_bytes()),
                name: name.to_string(),
                label: None,
                group: String::new(),
                size: 1,
            })
            .collect();
        let shards = cut_shards(&template, images, 2);
        let mut store = ShardStore::new(dir.path().join("shards"), 2);
        // The second shard finishes first.
        store
            .finished(
                &shards[1],
                vec![RowOutcome::Probabilities(vec![0.25, 0.75])],
            )
            .unwrap();
        store
            .finished(
                &shards[0],
                vec![
                    RowOutcome::Probabilities(vec![0.9, 0.1]),
                    RowOutcome::Bad("cannot decode image y.png: bad".into()),
                ],
            )
            .unwrap();
        let out = dir.path().join("out");
        let merged = store
            .merge(&shards, &["a".into(), "b".into()], &out)
            .unwrap();
        assert_eq!(merged.predicted, 2);
        assert_eq!(
            merged.skipped,
            [(
                "y.png".to_owned(),
                "cannot decode image y.png: bad".to_owned()
            )]
        );
        let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
        assert_eq!(
            read("predictions.csv"),
            "filename,label\nx.png,a\nsub/z.png,b\n"
        );
        assert_eq!(
            read("probabilities.csv"),
            "filename,a,b\nx.png,0.9,0.1\nsub/z.png,0.25,0.75\n"
        );
        assert_eq!(
            read("skipped.csv"),
            "filename,error\ny.png,cannot decode image y.png: bad\n"
        );
    }
}
