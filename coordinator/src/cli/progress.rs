//! Progress bars on stderr: for long data set work, and for uploads; hidden when stderr
//! is not a terminal.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::draw::Draw;
use crate::client::UploadProgress;
use crate::dataset::Progress;

/// Below this many files the work is too quick for a bar to help.
const MIN_FILES_FOR_BAR: u64 = 500;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new() -> Self {
        Self {
            bar: ProgressBar::hidden(),
        }
    }
}

impl Progress for Bar {
    fn begin(&self, total: u64, what: &str) {
        self.bar.set_length(total);
        self.bar.set_message(what.to_owned());
        if total >= MIN_FILES_FOR_BAR {
            self.bar.set_style(
                ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, eta {eta})")
                    .expect("the template is valid"),
            );
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The byte-count bar an upload draws, with the image being sent as its message. The
/// bar appears only once there is something to upload.
pub struct UploadBar {
    draw: Draw,
    bar: OnceLock<ProgressBar>,
    images: AtomicUsize,
}

impl UploadBar {
    pub fn new(draw: Draw) -> Self {
        Self {
            draw,
            bar: OnceLock::new(),
            images: AtomicUsize::new(0),
        }
    }
}

impl UploadProgress for UploadBar {
    fn start(&self, images: usize, bytes: u64) {
        self.images.store(images, Ordering::Relaxed);
        let bar = self.bar.get_or_init(|| {
            ProgressBar::with_draw_target(Some(bytes), self.draw.target()).with_style(
                ProgressStyle::with_template(
                    "{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                )
                .expect("the template is valid"),
            )
        });
        bar.set_length(bytes);
    }

    fn image(&self, index: usize) {
        let total = self.images.load(Ordering::Relaxed);
        if let Some(bar) = self.bar.get() {
            bar.set_message(format!("uploading {index}/{total} images"));
        }
    }

    fn sent(&self, bytes: u64) {
        if let Some(bar) = self.bar.get() {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.get() {
            bar.finish_and_clear();
        }
    }
}
