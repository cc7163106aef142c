//! Upload limits over loopback: a blob past the size limit and a stream that stalls are
//! refused with errors that say which, and nothing unfinished becomes a stored blob.

use std::time::Duration;

use foldtrain_proto::{BlobHash, CHUNK_SIZE, pb};
use tokio_stream::wrappers::ReceiverStream;

use super::tests::{TestServer, chunks_of, client, missing, serve_with};
use super::*;
use crate::config::ServeConfig;

async fn serve_limited(max_blob: u64, idle_timeout: Duration) -> TestServer {
    serve_with(ServeConfig {
        uploads: UploadLimits {
            max_blob,
            idle_timeout,
        },
        ..ServeConfig::default()
    })
    .await
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 249) as u8 ^ seed).collect()
}

/// Files in the blob store's temporary folder: unfinished uploads.
fn temporaries(server: &TestServer) -> usize {
    std::fs::read_dir(server.dir.path().join("blobs/tmp"))
        .unwrap()
        .count()
}

#[test]
fn the_default_limits_take_real_images_and_pretrained_weights() {
    let limits = UploadLimits::default();
    assert_eq!(limits.max_blob, MAX_UPLOAD_BLOB);
    assert_eq!(limits.max_blob, 256 * 1024 * 1024);
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(ServeConfig::default().uploads, limits);
}

#[tokio::test]
async fn a_blob_past_the_size_limit_is_refused_and_nothing_of_it_is_stored() {
    let limit = 2 * CHUNK_SIZE as u64;
    let server = serve_limited(limit, UPLOAD_IDLE_TIMEOUT).await;
    let mut c = client(&server, None).await;
    let at_limit = blob(2 * CHUNK_SIZE, 1);
    let over = blob(2 * CHUNK_SIZE + 1, 2);
    let (fits, big) = (BlobHash::of(&at_limit), BlobHash::of(&over));

    let stream: Vec<pb::BlobChunk> = chunks_of(&at_limit, fits)
        .into_iter()
        .chain(chunks_of(&over, big))
        .collect();
    let status = c
        .upload_blobs(tokio_stream::iter(stream))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "blob {big} exceeds the 2097152-byte limit on one upload; nothing of it was stored"
        )
    );
    // The blob before it, whole and within the limit, stays; the refused one never shows.
    assert_eq!(missing(&mut c, &[fits, big]).await, vec![big.0.to_vec()]);
    assert_eq!(temporaries(&server), 0);
}

#[tokio::test]
async fn a_stalled_upload_is_ended_and_its_unfinished_blob_is_not_stored() {
    let server = serve_limited(MAX_UPLOAD_BLOB, Duration::from_millis(300)).await;
    let mut c = client(&server, None).await;
    let whole = blob(100, 3);
    let partial = blob(CHUNK_SIZE + 10, 4);
    let (done, stalled) = (BlobHash::of(&whole), BlobHash::of(&partial));

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for chunk in chunks_of(&whole, done) {
        tx.send(chunk).await.unwrap();
    }
    tx.send(chunks_of(&partial, stalled).remove(0))
        .await
        .unwrap();
    // `tx` stays open and sends nothing more: the stream stalls mid-blob.
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        c.upload_blobs(ReceiverStream::new(rx)),
    )
    .await
    .expect("the coordinator never ended the stalled upload")
    .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "the upload sent nothing for 0.3 s in the middle of blob {stalled}; nothing \
             unfinished was stored"
        )
    );
    assert_eq!(
        missing(&mut c, &[done, stalled]).await,
        vec![stalled.0.to_vec()]
    );
    assert_eq!(temporaries(&server), 0);
    drop(tx);
}
