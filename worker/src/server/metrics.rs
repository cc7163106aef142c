//! The worker's Prometheus metrics, fed by the fold events each attempt already sends
//! to the coordinator (throughput, batch time, loss, epoch, images trained), plus slot
//! occupancy and GPU memory read at scrape time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use foldtrain_proto::FoldEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::gpu_memory::DeviceMemory;
use crate::device::Slot;

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabel {
    slot: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    slot: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

/// Batch times from 5 ms (a tiny CPU model) to about 80 s (a large batch on a slow CPU).
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The worker's metrics registry; cheap to clone.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Arc<Registry>,
    images_per_second: Family<SlotLabel, FloatGauge>,
    batch_duration: Family<SlotLabel, Histogram, fn() -> Histogram>,
    train_loss: Family<SlotLabel, FloatGauge>,
    val_loss: Family<SlotLabel, FloatGauge>,
    epoch: Family<SlotLabel, Gauge>,
    images_trained: Family<SlotLabel, Counter>,
    folds: Family<OutcomeLabel, Counter>,
    predict_images_per_second: Family<SlotLabel, FloatGauge>,
    images_predicted: Family<SlotLabel, Counter>,
    busy_slots: Gauge,
    gpu_used: Family<DeviceLabel, Gauge>,
    gpu_total: Family<DeviceLabel, Gauge>,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl WorkerMetrics {
    /// A registry for a worker serving `slots`; every slot shows from the start.
    pub fn new(slots: &[Slot]) -> Self {
        let mut metrics = Self {
            registry: Arc::default(),
            images_per_second: Family::default(),
            batch_duration: Family::new_with_constructor(batch_histogram),
            train_loss: Family::default(),
            val_loss: Family::default(),
            epoch: Family::default(),
            images_trained: Family::default(),
            folds: Family::default(),
            predict_images_per_second: Family::default(),
            images_predicted: Family::default(),
            busy_slots: Gauge::default(),
            gpu_used: Family::default(),
            gpu_total: Family::default(),
        };
        let mut registry = Registry::with_prefix("foldtrain_worker");
        metrics.register_training(&mut registry);
        metrics.register_prediction(&mut registry);
        metrics.register_occupancy(&mut registry, slots.len());
        metrics.registry = Arc::new(registry);
        for slot in slots {
            let label = SlotLabel { slot: slot.name() };
            let _ = metrics.images_per_second.get_or_create(&label);
            let _ = metrics.batch_duration.get_or_create(&label);
            let _ = metrics.epoch.get_or_create(&label);
            let _ = metrics.images_trained.get_or_create(&label);
            let _ = metrics.predict_images_per_second.get_or_create(&label);
            let _ = metrics.images_predicted.get_or_create(&label);
        }
        metrics
    }

    /// The series fed by the attempts' fold events.
    fn register_training(&self, registry: &mut Registry) {
        registry.register(
            "images_per_second",
            "Training throughput of the running epoch so far, per slot (0 when idle)",
            self.images_per_second.clone(),
        );
        registry.register_with_unit(
            "batch_duration",
            "Wall time of one training batch (data, forward, backward, step), per slot",
            Unit::Seconds,
            self.batch_duration.clone(),
        );
        registry.register(
            "loss",
            "Training loss: mean of the current epoch so far, then of the finished epoch",
            self.train_loss.clone(),
        );
        registry.register(
            "val_loss",
            "Validation loss of the last finished epoch",
            self.val_loss.clone(),
        );
        registry.register(
            "epoch",
            "Epoch the slot is training (1-based; 0 before the first)",
            self.epoch.clone(),
        );
        registry.register(
            "images_trained",
            "Training images passed through the model",
            self.images_trained.clone(),
        );
        registry.register(
            "folds",
            "Fold attempts that ran to a verdict on this worker, by outcome (done, failed)",
            self.folds.clone(),
        );
    }

    /// The series fed by prediction shards.
    fn register_prediction(&self, registry: &mut Registry) {
        registry.register(
            "predict_images_per_second",
            "Prediction throughput of the running shard so far, per slot (0 when idle)",
            self.predict_images_per_second.clone(),
        );
        registry.register(
            "images_predicted",
            "Images scored for predictions (unreadable ones included), per slot",
            self.images_predicted.clone(),
        );
    }

    /// The recorder for one prediction shard on `slot`, its clock started now.
    pub fn shard(&self, slot: Slot) -> ShardMetrics {
        let label = SlotLabel { slot: slot.name() };
        ShardMetrics {
            images_per_second: self.predict_images_per_second.get_or_create_owned(&label),
            images_predicted: self.images_predicted.get_or_create_owned(&label),
            started: std::time::Instant::now(),
            rows: 0,
        }
    }

    /// The slots and the GPU memory, set when scraped.
    fn register_occupancy(&self, registry: &mut Registry, slots: usize) {
        let slot_count: Gauge = Gauge::default();
        slot_count.set(slots as i64);
        // Not "slots": the coordinator's foldtrain_worker_slots counts every worker's.
        registry.register("served_slots", "Slots this worker serves", slot_count);
        registry.register(
            "busy_slots",
            "Slots running a fold or a prediction shard right now",
            self.busy_slots.clone(),
        );
        registry.register_with_unit(
            "gpu_memory_used",
            "GPU memory in use on the device, all processes (from NVML)",
            Unit::Bytes,
            self.gpu_used.clone(),
        );
        registry.register_with_unit(
            "gpu_memory_total",
            "GPU memory installed on the device (from NVML)",
            Unit::Bytes,
            self.gpu_total.clone(),
        );
    }

    /// The recorder for one attempt on `slot`, training `train_rows` images in batches of
    /// `batch_size`.
    pub fn attempt(&self, slot: Slot, batch_size: u32, train_rows: usize) -> AttemptMetrics {
        let slot = slot.name();
        let label = SlotLabel { slot: slot.clone() };
        AttemptMetrics {
            images_per_second: self.images_per_second.get_or_create_owned(&label),
            batch_duration: self.batch_duration.get_or_create_owned(&label),
            train_loss: self.train_loss.get_or_create_owned(&label),
            val_loss: self.val_loss.get_or_create_owned(&label),
            epoch: self.epoch.get_or_create_owned(&label),
            images_trained: self.images_trained.get_or_create_owned(&label),
            folds: self.folds.clone(),
            slot,
            batch_size: batch_size.max(1) as u64,
            train_rows: train_rows as u64,
            last: None,
        }
    }

    /// The exposition text, with `busy` slots and the GPU `memory` read just now.
    pub fn render(&self, busy: usize, memory: &[DeviceMemory]) -> Result<String, String> {
        self.busy_slots.set(busy as i64);
        for m in memory {
            let label = DeviceLabel {
                device: m.device.clone(),
            };
            self.gpu_used.get_or_create(&label).set(m.used as i64);
            self.gpu_total.get_or_create(&label).set(m.total as i64);
        }
        foldtrain_proto::runtime::metrics_http::encode_registry(&self.registry)
    }
}

/// Where the previous Progress event of the running epoch left off.
#[derive(Debug, Clone, Copy)]
struct Mark {
    epoch: u32,
    batch: u32,
    rows: u64,
    seconds: f64,
}

/// Turns one attempt's fold events into metric updates.
pub struct AttemptMetrics {
    images_per_second: FloatGauge,
    batch_duration: Histogram,
    train_loss: FloatGauge,
    val_loss: FloatGauge,
    epoch: Gauge,
    images_trained: Counter,
    folds: Family<OutcomeLabel, Counter>,
    slot: String,
    batch_size: u64,
    train_rows: u64,
    last: Option<Mark>,
}

impl AttemptMetrics {
    pub fn observe(&mut self, event: &FoldEvent) {
        match event {
            FoldEvent::Progress {
                epoch,
                batch,
                loss,
                images_per_sec,
                ..
            } => self.progress(*epoch, *batch, *loss, *images_per_sec),
            FoldEvent::Epoch(record) => {
                self.epoch.set(i64::from(record.epoch));
                self.train_loss.set(record.loss);
                self.val_loss.set(record.val_loss);
            }
            FoldEvent::Done(_) => self.finish("done"),
            FoldEvent::Failed(_) => self.finish("failed"),
            FoldEvent::Checkpoint { .. } | FoldEvent::Oof { .. } | FoldEvent::Test { .. } => {}
        }
    }

    /// Progress events come every few batches and carry the epoch's throughput so far,
    /// so the engine's own clock gives the epoch's elapsed time (rows / throughput), and
    /// the batches since the previous event share the time between the two.
    fn progress(&mut self, epoch: u32, batch: u32, loss: f64, images_per_sec: f64) {
        self.epoch.set(i64::from(epoch));
        self.train_loss.set(loss);
        self.images_per_second.set(images_per_sec);
        // Every batch but the last is full.
        let rows = (u64::from(batch) * self.batch_size).min(self.train_rows);
        let seconds = if images_per_sec > 0.0 {
            rows as f64 / images_per_sec
        } else {
            0.0
        };
        let since = self
            .last
            .filter(|m| m.epoch == epoch && m.batch < batch)
            .unwrap_or(Mark {
                epoch,
                batch: 0,
                rows: 0,
                seconds: 0.0,
            });
        let batches = batch.saturating_sub(since.batch);
        if batches > 0 && seconds > since.seconds {
            let each = (seconds - since.seconds) / f64::from(batches);
            for _ in 0..batches {
                self.batch_duration.observe(each);
            }
        }
        self.images_trained.inc_by(rows.saturating_sub(since.rows));
        self.last = Some(Mark {
            epoch,
            batch,
            rows,
            seconds,
        });
    }

    fn finish(&mut self, outcome: &'static str) {
        self.images_per_second.set(0.0);
        self.folds
            .get_or_create(&OutcomeLabel {
                slot: self.slot.clone(),
                outcome,
            })
            .inc();
    }
}

impl Drop for AttemptMetrics {
    /// An attempt that ends without a verdict (cancelled, lost) stops training too.
    fn drop(&mut self) {
        self.images_per_second.set(0.0);
    }
}

/// Counts one shard's rows as they are streamed back.
pub struct ShardMetrics {
    images_per_second: FloatGauge,
    images_predicted: Counter,
    started: std::time::Instant,
    rows: u64,
}

impl ShardMetrics {
    /// `rows` more images were scored.
    pub fn scored(&mut self, rows: usize) {
        self.rows += rows as u64;
        self.images_predicted.inc_by(rows as u64);
        let seconds = self.started.elapsed().as_secs_f64();
        if seconds > 0.0 {
            self.images_per_second.set(self.rows as f64 / seconds);
        }
    }
}

impl Drop for ShardMetrics {
    /// However the shard ends, the slot no longer predicts.
    fn drop(&mut self) {
        self.images_per_second.set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldtrain_proto::task::{EpochRecord, FoldSummary};

    fn progress(epoch: u32, batch: u32, batches: u32, loss: f64, ips: f64) -> FoldEvent {
        FoldEvent::Progress {
            epoch,
            batch,
            batches,
            loss,
            images_per_sec: ips,
            phase: "train",
        }
    }

    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn progress_events_become_throughput_batch_times_and_images() {
        let metrics = WorkerMetrics::new(&[Slot::Cpu, Slot::Cuda(1)]);
        let idle = metrics.render(0, &[]).unwrap();
        assert_eq!(sample(&idle, "foldtrain_worker_served_slots"), 2.0);
        assert_eq!(
            sample(
                &idle,
                r#"foldtrain_worker_images_trained_total{slot="cuda:1"}"#
            ),
            0.0
        );

        let mut attempt = metrics.attempt(Slot::Cpu, 10, 45);
        // 2 batches of 10 in 1 s, then the last 25 rows (3 batches) at the end of 2.5 s.
        attempt.observe(&progress(1, 2, 5, 2.0, 20.0));
        attempt.observe(&progress(1, 5, 5, 1.5, 18.0));
        let text = metrics.render(1, &[]).unwrap();
        let cpu = |name: &str| sample(&text, &format!("foldtrain_worker_{name}{{slot=\"cpu\"}}"));
        assert_eq!(cpu("images_trained_total"), 45.0);
        assert_eq!(cpu("images_per_second"), 18.0);
        assert_eq!(cpu("loss"), 1.5);
        assert_eq!(cpu("epoch"), 1.0);
        assert_eq!(cpu("batch_duration_seconds_count"), 5.0);
        assert!(
            (cpu("batch_duration_seconds_sum") - 2.5).abs() < 1e-9,
            "{text}"
        );
        assert_eq!(sample(&text, "foldtrain_worker_busy_slots"), 1.0);

        // A new epoch starts its clock again.
        attempt.observe(&FoldEvent::Epoch(EpochRecord {
            epoch: 1,
            loss: 1.4,
            val_loss: 1.7,
            ..EpochRecord::default()
        }));
        attempt.observe(&progress(2, 5, 5, 1.2, 45.0));
        attempt.observe(&FoldEvent::Done(FoldSummary {
            best_epoch: 2,
            best_val_loss: 1.0,
            epochs_run: 2,
            early_stopped: false,
        }));
        let text = metrics.render(0, &[]).unwrap();
        let cpu = |name: &str| sample(&text, &format!("foldtrain_worker_{name}{{slot=\"cpu\"}}"));
        assert_eq!(cpu("images_trained_total"), 90.0);
        assert_eq!(cpu("val_loss"), 1.7);
        assert_eq!(cpu("epoch"), 2.0);
        assert_eq!(cpu("images_per_second"), 0.0, "idle after the verdict");
        assert_eq!(cpu("batch_duration_seconds_count"), 10.0);
        assert!(
            (cpu("batch_duration_seconds_sum") - 3.5).abs() < 1e-9,
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"foldtrain_worker_folds_total{slot="cpu",outcome="done"}"#
            ),
            1.0
        );
        assert_eq!(sample(&text, "foldtrain_worker_busy_slots"), 0.0);
    }

    #[test]
    fn gpu_memory_is_exported_per_device_when_read() {
        let metrics = WorkerMetrics::new(&[Slot::Cuda(0)]);
        let text = metrics.render(0, &[]).unwrap();
        assert!(!text.contains("gpu_memory_used_bytes{"), "{text}");
        let memory = [DeviceMemory {
            device: "cuda:0".into(),
            used: 1 << 30,
            total: 80 << 30,
        }];
        let text = metrics.render(0, &memory).unwrap();
        assert_eq!(
            sample(
                &text,
                r#"foldtrain_worker_gpu_memory_used_bytes{device="cuda:0"}"#
            ),
            (1u64 << 30) as f64
        );
        assert_eq!(
            sample(
                &text,
                r#"foldtrain_worker_gpu_memory_total_bytes{device="cuda:0"}"#
            ),
            (80u64 << 30) as f64
        );
    }

    #[test]
    fn a_dropped_attempt_leaves_the_slot_idle() {
        let metrics = WorkerMetrics::new(&[Slot::Cpu]);
        let mut attempt = metrics.attempt(Slot::Cpu, 4, 8);
        attempt.observe(&progress(1, 1, 2, 2.0, 8.0));
        drop(attempt);
        let text = metrics.render(0, &[]).unwrap();
        assert_eq!(
            sample(&text, r#"foldtrain_worker_images_per_second{slot="cpu"}"#),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                r#"foldtrain_worker_images_trained_total{slot="cpu"}"#
            ),
            4.0
        );
    }

    #[test]
    fn shards_count_images_and_throughput_until_they_end() {
        let metrics = WorkerMetrics::new(&[Slot::Cpu]);
        let cpu = |text: &str, name: &str| {
            sample(text, &format!("foldtrain_worker_{name}{{slot=\"cpu\"}}"))
        };
        let mut shard = metrics.shard(Slot::Cpu);
        std::thread::sleep(std::time::Duration::from_millis(20));
        shard.scored(6);
        shard.scored(4);
        let text = metrics.render(1, &[]).unwrap();
        assert_eq!(cpu(&text, "images_predicted_total"), 10.0);
        let rate = cpu(&text, "predict_images_per_second");
        // 10 images in at least 20 ms: at most 500 images/s, and more than none.
        assert!(rate > 0.0 && rate <= 500.0, "{rate}");
        assert_eq!(cpu(&text, "images_trained_total"), 0.0, "not training");
        drop(shard);
        let text = metrics.render(0, &[]).unwrap();
        assert_eq!(cpu(&text, "predict_images_per_second"), 0.0, "idle");
        assert_eq!(
            cpu(&text, "images_predicted_total"),
            10.0,
            "a counter stays"
        );
    }
}
