//! A progress bar on stderr for long data set work; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
