use std::sync::Mutex;

use foldtrain_proto::{BlobHash, WorkerId};

use super::*;

/// Answers each shard from a rule: (slot position, shard number) to its updates.
struct VirtualRunner<F>(F);

impl<F> ShardRunner for VirtualRunner<F>
where
    F: Fn(usize, &ShardTask) -> Vec<Result<ShardUpdate, ShardFailure>> + Send + Sync,
{
    fn run(&self, slot: &SlotTarget, task: ShardTask) -> ShardUpdates {
        futures::stream::iter((self.0)(slot.slot, &task)).boxed()
    }
}

/// Every image scores (its position in the whole list, 0).
fn scored(task: &ShardTask) -> Vec<Result<ShardUpdate, ShardFailure>> {
    let rows = task
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| {
            let global: f32 = image.name.parse().unwrap();
            (i, RowOutcome::Probabilities(vec![global, 0.0]))
        })
        .rev()
        .collect();
    vec![Ok(ShardUpdate::Rows(rows)), Ok(ShardUpdate::Done)]
}

#[derive(Default)]
struct Recorded(Mutex<Vec<(u64, Vec<RowOutcome>)>>);

impl ShardSink for &Recorded {
    fn finished(&mut self, task: &ShardTask, rows: Vec<RowOutcome>) -> Result<(), PredictError> {
        self.0.lock().unwrap().push((task.shard, rows));
        Ok(())
    }
}

fn shards(images: usize, shard_size: usize) -> Vec<ShardTask> {
    let template = test_template();
    let images = (0..images)
        .map(|i| ImageRef {
            hash: BlobHash::of(&i.to_le_bytes()),
            name: i.to_string(),
            label: None,
            group: String::new(),
            size: 1,
        })
        .collect();
    cut_shards(&template, images, shard_size)
}

fn slots(n: usize) -> Vec<SlotTarget> {
    (0..n)
        .map(|i| SlotTarget {
            call_token: Default::default(),
            worker: WorkerId::new(format!("w{i}")),
            address: format!("127.0.0.1:{i}"),
            slot: i,
            device_index: -1,
        })
        .collect()
}

fn options(skip_bad: bool) -> DispatchOptions {
    DispatchOptions {
        skip_bad,
        max_attempts: 3,
        done: Arc::new(AtomicU64::new(0)),
    }
}

async fn run(
    runner: impl ShardRunner + 'static,
    slot_count: usize,
    options: &DispatchOptions,
) -> (Result<(), PredictError>, Vec<(u64, Vec<RowOutcome>)>) {
    let recorded = Recorded::default();
    let result = dispatch(
        Arc::new(runner),
        slots(slot_count),
        &shards(10, 3),
        options,
        &mut &recorded,
    )
    .await;
    let mut rows = recorded.0.into_inner().unwrap();
    rows.sort_by_key(|(shard, _)| *shard);
    (result, rows)
}

#[test]
fn shards_are_consecutive_runs_of_the_input() {
    let shards = shards(10, 4);
    let sizes: Vec<usize> = shards.iter().map(|s| s.images.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(shards[2].shard, 2);
    assert_eq!(shards[1].images[0].name, "4");
}

#[tokio::test]
async fn every_shard_is_scored_once_with_rows_in_shard_order() {
    let options = options(false);
    let (result, rows) = run(
        VirtualRunner(|_, task: &ShardTask| scored(task)),
        2,
        &options,
    )
    .await;
    result.unwrap();
    assert_eq!(rows.len(), 4);
    let firsts: Vec<f32> = rows
        .iter()
        .flat_map(|(_, rows)| rows.iter())
        .map(|r| match r {
            RowOutcome::Probabilities(p) => p[0],
            RowOutcome::Bad(m) => panic!("{m}"),
        })
        .collect();
    assert_eq!(firsts, (0..10).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(options.done.load(Ordering::Relaxed), 10);
}

#[tokio::test]
async fn a_lost_worker_costs_only_its_shard() {
    let options = options(false);
    // Slot 0 breaks mid-shard after sending a row; slot 1 does the rest.
    let runner = VirtualRunner(|slot, task: &ShardTask| {
        if slot == 0 {
            let first = scored(task).remove(0).unwrap();
            let ShardUpdate::Rows(mut rows) = first else {
                unreachable!()
            };
            rows.truncate(1);
            vec![
                Ok(ShardUpdate::Rows(rows)),
                Err(ShardFailure::lost("reset")),
            ]
        } else {
            scored(task)
        }
    });
    let (result, rows) = run(runner, 2, &options).await;
    result.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        options.done.load(Ordering::Relaxed),
        10,
        "rows of the lost attempt are not counted"
    );

    // With every slot lost, the run stops and says why.
    let (result, _) = run(
        VirtualRunner(|_, _: &ShardTask| vec![Err(ShardFailure::lost("reset"))]),
        2,
        &options,
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("no worker slot") && err.contains("reset"),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_image_stops_the_run_unless_skipped() {
    let runner = || {
        VirtualRunner(|_, task: &ShardTask| {
            let mut updates = scored(task);
            if let Some(i) = task.images.iter().position(|im| im.name == "7") {
                updates.insert(
                    0,
                    Ok(ShardUpdate::Rows(vec![(
                        i,
                        RowOutcome::Bad("cannot decode image 7".into()),
                    )])),
                );
                if let Ok(ShardUpdate::Rows(rows)) = &mut updates[1] {
                    rows.retain(|(j, _)| *j != i);
                }
            }
            updates
        })
    };
    let (result, _) = run(runner(), 1, &options(false)).await;
    match result.unwrap_err() {
        PredictError::BadImage { name, message } => {
            assert_eq!(name, "7");
            assert!(message.contains("cannot decode image 7"));
        }
        other => panic!("{other}"),
    }
    let (result, rows) = run(runner(), 1, &options(true)).await;
    result.unwrap();
    assert_eq!(
        rows[2].1[1],
        RowOutcome::Bad("cannot decode image 7".into())
    );
}

#[tokio::test]
async fn a_failure_that_cannot_pass_ends_the_run_and_duplicates_are_refused() {
    let runner = VirtualRunner(|_, _: &ShardTask| {
        vec![Err(ShardFailure {
            message: "weights of a 5-class model".into(),
            retryable: false,
            lost: false,
        })]
    });
    let (result, _) = run(runner, 2, &options(false)).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("shard") && err.contains("5-class"), "{err}");

    let twice = VirtualRunner(|_, task: &ShardTask| {
        let mut updates = scored(task);
        updates.insert(0, scored(task).remove(0));
        updates
    });
    let (result, _) = run(twice, 1, &options(false)).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
}
