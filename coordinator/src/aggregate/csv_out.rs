//! The CSV files of the results contract, rendered to bytes. Probabilities use Rust's
//! shortest round-trip `Display` for f32, so reading a file back gives the exact values.

use foldtrain_proto::task::EpochRecord;

use crate::error::{CoordinatorError, Result};
use crate::store::JobRecord;

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new())
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>> {
    w.into_inner()
        .map_err(|e| CoordinatorError::encode("csv", e))
}

fn csv_err(e: csv::Error) -> CoordinatorError {
    CoordinatorError::encode("csv", e)
}

/// `filename,<class...>`: one row per test image, in input order.
pub fn probabilities_csv(job: &JobRecord, probs: &[f32]) -> Result<Vec<u8>> {
    let classes = job.class_names.len();
    let mut w = writer();
    let mut header = vec!["filename".to_string()];
    header.extend(job.class_names.iter().cloned());
    w.write_record(&header).map_err(csv_err)?;
    for (image, row) in job.test.iter().zip(probs.chunks_exact(classes)) {
        let mut record = vec![image.name.clone()];
        record.extend(row.iter().map(|p| p.to_string()));
        w.write_record(&record).map_err(csv_err)?;
    }
    finish(w)
}

/// `filename,label`: the predicted class name of every test image, in input order.
pub fn predictions_csv(job: &JobRecord, predicted: &[u32]) -> Result<Vec<u8>> {
    let mut w = writer();
    w.write_record(["filename", "label"]).map_err(csv_err)?;
    for (image, &p) in job.test.iter().zip(predicted) {
        w.write_record([image.name.as_str(), job.class_names[p as usize].as_str()])
            .map_err(csv_err)?;
    }
    finish(w)
}

/// `filename,label,fold,predicted,<class...>`: every training row, in input order.
pub fn oof_csv(job: &JobRecord, oof: &[f32], predicted: &[u32]) -> Result<Vec<u8>> {
    let classes = job.class_names.len();
    let mut w = writer();
    let mut header: Vec<String> = ["filename", "label", "fold", "predicted"]
        .map(String::from)
        .to_vec();
    header.extend(job.class_names.iter().cloned());
    w.write_record(&header).map_err(csv_err)?;
    for (row, image) in job.train.iter().enumerate() {
        let label = image
            .label
            .map_or("", |l| job.class_names[l as usize].as_str());
        let mut record = vec![
            image.name.clone(),
            label.to_string(),
            job.fold_of[row].to_string(),
            job.class_names[predicted[row] as usize].clone(),
        ];
        record.extend(
            oof[row * classes..(row + 1) * classes]
                .iter()
                .map(|p| p.to_string()),
        );
        w.write_record(&record).map_err(csv_err)?;
    }
    finish(w)
}

/// `epoch,loss,accuracy,f1,val_loss,val_accuracy,val_f1,lr`: one fold's training curve.
pub fn history_csv(history: &[EpochRecord]) -> Result<Vec<u8>> {
    let mut w = writer();
    w.write_record([
        "epoch",
        "loss",
        "accuracy",
        "f1",
        "val_loss",
        "val_accuracy",
        "val_f1",
        "lr",
    ])
    .map_err(csv_err)?;
    for e in history {
        w.write_record([
            e.epoch.to_string(),
            e.loss.to_string(),
            e.accuracy.to_string(),
            e.f1.to_string(),
            e.val_loss.to_string(),
            e.val_accuracy.to_string(),
            e.val_f1.to_string(),
            e.lr.to_string(),
        ])
        .map_err(csv_err)?;
    }
    finish(w)
}
