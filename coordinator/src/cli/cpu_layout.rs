//! How `foldtrain run` lays out training on a machine without GPUs: how many local CPU
//! workers (each trains one fold at a time) and how many threads each, from the cores, the
//! folds and the memory.
//!
//! Folds are independent, and libtorch's intra-op threads scale poorly on small inputs
//! (on 2 cores, 5 DenseNet121 folds at 32 px took 138 s with one worker on both cores and
//! 109 s with two workers of one thread), so the rule is as many workers as there are cores,
//! but no more than there are folds, nor than fit in the memory available; the cores are
//! then shared out evenly among them.

use foldtrain_proto::JobConfig;
use foldtrain_proto::config::Arch;

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

/// A worker process before it trains: libtorch, the runtime, allocator slack.
const WORKER_BASE_BYTES: u64 = 350 * MIB;

/// What the machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    pub cores: usize,
    /// `MemAvailable` of /proc/meminfo; `None` where it cannot be read.
    pub available_bytes: Option<u64>,
}

impl Machine {
    /// This machine: its available parallelism and `/proc/meminfo`.
    pub fn this_one() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            available_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| mem_available(&text)),
        }
    }
}

/// `MemAvailable` from the text of /proc/meminfo, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// What the job asks of each worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldDemand {
    pub folds: u32,
    /// One fold's peak memory, roughly ([`fold_peak_bytes`]).
    pub peak_bytes: u64,
}

/// What the user fixed on the command line; everything left `None` is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub workers: Option<usize>,
    /// `train.torch_threads`, when not 0.
    pub torch_threads: Option<u32>,
    /// `train.loader_threads`, when not 0.
    pub loader_threads: Option<u32>,
}

/// What bounded the number of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `--workers N`.
    Asked,
    /// One per core (or per `--torch-threads` cores).
    Cores,
    /// No more workers than folds.
    Folds,
    /// No more than fit in the memory available.
    Memory,
}

/// The chosen layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLayout {
    pub workers: usize,
    pub torch_threads: u32,
    pub loader_threads: u32,
    pub bound: Bound,
    /// Even one fold may not fit in the memory available; it is started anyway.
    pub short_of_memory: bool,
}

/// Chooses the workers and their threads. Workers: `--workers`, else the fewest of the
/// cores (divided by `--torch-threads` when given), the folds and the folds that fit in
/// the memory available; at least one. Threads: the cores shared evenly among the
/// workers (at least one each), unless the user fixed them.
pub fn choose(machine: Machine, demand: FoldDemand, asked: Asked) -> CpuLayout {
    let cores = machine.cores.max(1);
    let fit = machine
        .available_bytes
        .map(|bytes| (bytes / demand.peak_bytes.max(1)) as usize);
    let (workers, bound) = match asked.workers {
        Some(n) => (n.max(1), Bound::Asked),
        None => {
            let by_cores = cores / asked.torch_threads.map_or(1, |t| t.max(1) as usize);
            let mut choice = (by_cores.max(1), Bound::Cores);
            for (limit, bound) in [
                (Some(demand.folds.max(1) as usize), Bound::Folds),
                (fit.map(|n| n.max(1)), Bound::Memory),
            ] {
                if let Some(limit) = limit
                    && limit < choice.0
                {
                    choice = (limit, bound);
                }
            }
            choice
        }
    };
    let share = (cores / workers).max(1) as u32;
    CpuLayout {
        workers,
        torch_threads: asked.torch_threads.unwrap_or(share),
        loader_threads: asked.loader_threads.unwrap_or(share),
        bound,
        short_of_memory: fit.is_some_and(|n| n < workers),
    }
}

impl CpuLayout {
    /// Writes the threads into the job's config (the same for every fold).
    pub fn apply(&self, config: &mut JobConfig) {
        config.train.torch_threads = self.torch_threads;
        config.train.loader_threads = self.loader_threads;
    }

    /// One line for the user: the layout, and what it was chosen from.
    pub fn describe(&self, machine: Machine, demand: FoldDemand) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let memory = match machine.available_bytes {
            Some(bytes) => format!(
                "{:.1} GiB available, about {:.1} GiB per fold",
                bytes as f64 / GIB,
                demand.peak_bytes as f64 / GIB
            ),
            None => "memory unknown".to_owned(),
        };
        let bound = match self.bound {
            Bound::Asked => "as asked",
            Bound::Cores => "one per core",
            Bound::Folds => "one per fold",
            Bound::Memory => "as many as fit in memory",
        };
        let mut line = format!(
            "starting {}, {} each, {bound} ({}, {}, {memory})",
            plural(self.workers, "local CPU worker"),
            plural(self.torch_threads as usize, "thread"),
            plural(machine.cores, "core"),
            plural(demand.folds as usize, "fold"),
        );
        if self.short_of_memory {
            line.push_str("; warning: that is more than the memory available is likely to hold");
        }
        line
    }
}

/// One fold's peak memory on a CPU worker, roughly. The terms:
/// - the worker process itself, 350 MiB;
/// - the parameters P (backbone and head, 4 bytes each) 21 times over: weights, gradients,
///   Adam's two moments and the best weights (5); the latest checkpoint (4 P: weights,
///   moments, best) encoded and cut into wire chunks (8); and the coordinator's copies
///   while it receives and stores it (8), since `foldtrain run`'s coordinator shares the
///   machine;
/// - the activations kept for the backward pass: batch × pixels × a per-architecture
///   figure (DenseNet121 about 6 KB per input pixel and image, the tiny one 200 B);
/// - the decoded-image cache: every image of the job at the input size (3 bytes a pixel),
///   up to `train.cache_bytes`.
pub fn fold_peak_bytes(config: &JobConfig, classes: usize, images: usize) -> u64 {
    let (backbone_params, features, activation_per_pixel) = match config.model.arch {
        Arch::Densenet121 => (6_953_856u64, 1024u64, 6 * 1024u64),
        Arch::DensenetTiny => (20_000, 32, 200),
    };
    let head_units = u64::from(config.model.head_units);
    let head_params = features * head_units + head_units + head_units * classes as u64;
    let param_bytes = 4 * (backbone_params + head_params);
    let t = &config.train;
    let pixels = u64::from(t.image_size) * u64::from(t.image_size);
    let activations = u64::from(t.batch_size) * pixels * activation_per_pixel;
    let cache = (images as u64 * pixels * 3).min(t.cache_bytes);
    WORKER_BASE_BYTES + 21 * param_bytes + activations + cache
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB_BYTES: u64 = 1 << 30;

    fn machine(cores: usize, gib: Option<u64>) -> Machine {
        Machine {
            cores,
            available_bytes: gib.map(|g| g * GIB_BYTES),
        }
    }

    fn demand(folds: u32, gib_per_fold: f64) -> FoldDemand {
        FoldDemand {
            folds,
            peak_bytes: (gib_per_fold * GIB_BYTES as f64) as u64,
        }
    }

    fn layout(workers: usize, threads: u32, bound: Bound) -> CpuLayout {
        CpuLayout {
            workers,
            torch_threads: threads,
            loader_threads: threads,
            bound,
            short_of_memory: false,
        }
    }

    #[test]
    fn one_worker_per_core_up_to_the_folds() {
        let none = Asked::default();
        // This machine's case: 2 cores, 5 folds, plenty of memory.
        assert_eq!(
            choose(machine(2, Some(20)), demand(5, 1.3), none),
            layout(2, 1, Bound::Cores)
        );
        assert_eq!(
            choose(machine(16, Some(120)), demand(5, 1.3), none),
            layout(5, 3, Bound::Folds)
        );
        assert_eq!(
            choose(machine(1, Some(8)), demand(5, 1.3), none),
            layout(1, 1, Bound::Cores)
        );
    }

    #[test]
    fn memory_caps_the_workers_and_the_cores_go_to_those_that_fit() {
        let none = Asked::default();
        // DenseNet121 at 229 px, batch 32: about 11 GiB a fold.
        assert_eq!(
            choose(machine(16, Some(24)), demand(5, 11.0), none),
            layout(2, 8, Bound::Memory)
        );
        // Not even one fits: one worker all the same, with a warning.
        let starved = choose(machine(8, Some(4)), demand(5, 11.0), none);
        assert_eq!((starved.workers, starved.torch_threads), (1, 8));
        assert!(starved.short_of_memory);
        assert!(
            starved
                .describe(machine(8, Some(4)), demand(5, 11.0))
                .contains("warning")
        );
        // Unknown memory does not cap.
        assert_eq!(
            choose(machine(4, None), demand(5, 11.0), none),
            layout(4, 1, Bound::Cores)
        );
    }

    #[test]
    fn what_the_user_fixed_wins() {
        let asked = Asked {
            workers: Some(3),
            ..Asked::default()
        };
        assert_eq!(
            choose(machine(2, Some(20)), demand(5, 1.3), asked),
            layout(3, 1, Bound::Asked)
        );
        // --workers beyond memory is honoured, and flagged.
        assert!(choose(machine(2, Some(2)), demand(5, 1.3), asked).short_of_memory);
        let threads = Asked {
            torch_threads: Some(4),
            ..Asked::default()
        };
        assert_eq!(
            choose(machine(16, Some(120)), demand(5, 1.3), threads),
            CpuLayout {
                workers: 4,
                torch_threads: 4,
                loader_threads: 4,
                bound: Bound::Cores,
                short_of_memory: false,
            }
        );
        let loaders = Asked {
            loader_threads: Some(1),
            ..Asked::default()
        };
        let chosen = choose(machine(8, Some(120)), demand(2, 1.3), loaders);
        assert_eq!(
            (chosen.workers, chosen.torch_threads, chosen.loader_threads),
            (2, 4, 1)
        );
    }

    #[test]
    fn the_threads_go_into_the_config() {
        let mut config = JobConfig::default();
        layout(2, 1, Bound::Cores).apply(&mut config);
        assert_eq!(
            (config.train.torch_threads, config.train.loader_threads),
            (1, 1)
        );
    }

    #[test]
    fn the_line_says_what_was_chosen_and_why() {
        let m = machine(2, Some(23));
        let d = demand(5, 1.3);
        let line = choose(m, d, Asked::default()).describe(m, d);
        assert_eq!(
            line,
            "starting 2 local CPU workers, 1 thread each, one per core \
             (2 cores, 5 folds, 23.0 GiB available, about 1.3 GiB per fold)"
        );
    }

    #[test]
    fn peak_memory_grows_with_the_input_and_the_model() {
        let mut config = JobConfig::default();
        config.train.image_size = 32;
        let small = fold_peak_bytes(&config, 14, 240);
        // About 1.1 GiB for DenseNet121 at 32 px, batch 32: parameters dominate.
        assert!((1.0..1.4).contains(&(small as f64 / GIB)), "{small}");
        config.train.image_size = 229;
        let large = fold_peak_bytes(&config, 14, 47_000);
        // Activations of 32 images of 229 px, plus a full 2 GiB image cache.
        assert!((11.0..14.0).contains(&(large as f64 / GIB)), "{large}");
        config.model.arch = Arch::DensenetTiny;
        config.model.head_units = 64;
        config.train.image_size = 32;
        assert!(fold_peak_bytes(&config, 14, 240) < 400 * MIB);
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24683792 kB\nMemFree:        14352396 kB\nMemAvailable:   21433260 kB\n";
        assert_eq!(mem_available(text), Some(21_433_260 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }
}
