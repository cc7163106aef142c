//! `curves_fold<k>.png`: one fold's training curves per epoch, loss on the left and
//! accuracy / macro-F1 on the right, with the best epoch marked on both.

use std::ops::Range;

use foldtrain_proto::task::EpochRecord;
use plotters::prelude::*;

use super::canvas::{Area, render_png};
use super::error::{DrawContext, ReportError};
use super::font::FAMILY;

pub(super) const SIZE: (u32, u32) = (1200, 500);

/// The file name of fold `k`'s curves.
pub(super) fn file_name(fold: u32) -> String {
    format!("curves_fold{fold}.png")
}

const TRAIN: RGBColor = RGBColor(52, 101, 164);
const VAL: RGBColor = RGBColor(204, 0, 0);
const TRAIN_F1: RGBColor = RGBColor(114, 159, 207);
const VAL_F1: RGBColor = RGBColor(245, 121, 0);
const BEST: RGBColor = RGBColor(78, 154, 6);

/// One line of a panel: its legend name, colour and value per epoch.
struct Series {
    name: &'static str,
    color: RGBColor,
    value: fn(&EpochRecord) -> f64,
}

impl Series {
    const fn new(name: &'static str, color: RGBColor, value: fn(&EpochRecord) -> f64) -> Self {
        Self { name, color, value }
    }
}

const LOSS: [Series; 2] = [
    Series::new("loss", TRAIN, |e| e.loss),
    Series::new("val_loss", VAL, |e| e.val_loss),
];

const SCORES: [Series; 4] = [
    Series::new("accuracy", TRAIN, |e| e.accuracy),
    Series::new("val_accuracy", VAL, |e| e.val_accuracy),
    Series::new("f1", TRAIN_F1, |e| e.f1),
    Series::new("val_f1", VAL_F1, |e| e.val_f1),
];

/// Renders fold `fold`'s `history`, marking `best_epoch`.
pub(super) fn render(
    fold: u32,
    history: &[EpochRecord],
    best_epoch: u32,
) -> Result<Vec<u8>, ReportError> {
    let file = file_name(fold);
    if history.is_empty() {
        return Err(ReportError::Inconsistent(format!(
            "fold {fold} has no epochs to plot"
        )));
    }
    render_png(&file, SIZE, |root| {
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        // Loss falls and scores rise, so each legend goes where its lines usually are not.
        let loss = Panel {
            caption: format!("fold {fold}: loss"),
            series: &LOSS,
            fixed_y: None,
            legend_at: SeriesLabelPosition::UpperRight,
        };
        panel(&file, &left, history, &loss, best_epoch)?;
        let scores = Panel {
            caption: format!("fold {fold}: accuracy and macro-F1"),
            series: &SCORES,
            fixed_y: Some(0.0..1.0),
            legend_at: SeriesLabelPosition::LowerRight,
        };
        panel(&file, &right, history, &scores, best_epoch)
    })
}

/// What one of the two panels shows.
struct Panel<'a> {
    caption: String,
    series: &'a [Series],
    fixed_y: Option<Range<f64>>,
    legend_at: SeriesLabelPosition,
}

fn panel(
    file: &str,
    area: &Area<'_>,
    history: &[EpochRecord],
    spec: &Panel<'_>,
    best_epoch: u32,
) -> Result<(), ReportError> {
    let series = spec.series;
    let first = history.iter().map(|e| e.epoch).min().unwrap_or(1);
    let last = history.iter().map(|e| e.epoch).max().unwrap_or(1);
    let x_range = first as f64 - 0.5..last as f64 + 0.5;
    let y_range = spec.fixed_y.clone().unwrap_or_else(|| {
        value_range(
            history
                .iter()
                .flat_map(|e| series.iter().map(move |s| (s.value)(e))),
        )
    });
    let mut chart = ChartBuilder::on(area)
        .caption(&spec.caption, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range, y_range.clone())
        .drawing(file)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((last - first + 1).min(12) as usize)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .drawing(file)?;

    let best = best_epoch as f64;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(best, y_range.start), (best, y_range.end)],
            BEST.stroke_width(2),
        )))
        .drawing(file)?
        .label(format!("best epoch {best_epoch}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BEST.stroke_width(2)));
    for s in series {
        // Non-finite values (a diverged epoch) are left out rather than drawn off-chart.
        let points: Vec<(f64, f64)> = history
            .iter()
            .map(|e| (e.epoch as f64, (s.value)(e)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let color = s.color;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .drawing(file)?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|(epoch, _)| *epoch == best)
                    .map(|&p| Circle::new(p, 5, color.filled())),
            )
            .drawing(file)?;
    }
    chart
        .configure_series_labels()
        .position(spec.legend_at.clone())
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .drawing(file)
}

/// The y range covering every finite value with a little headroom; `0..1` when none is.
fn value_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::MIN })..hi + pad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_range_pads_and_skips_non_finite() {
        let r = value_range([0.5, f64::NAN, 1.5, f64::INFINITY].into_iter());
        assert!(r.start < 0.5 && r.start >= 0.0, "{r:?}");
        assert!(r.end > 1.5 && r.end < 1.7, "{r:?}");
        assert_eq!(value_range([f64::NAN].into_iter()), 0.0..1.0);
        let flat = value_range([2.0, 2.0].into_iter());
        assert!(flat.start < 2.0 && flat.end > 2.0);
    }

    #[test]
    fn an_empty_history_is_refused() {
        assert!(matches!(
            render(0, &[], 1),
            Err(ReportError::Inconsistent(_))
        ));
    }
}
