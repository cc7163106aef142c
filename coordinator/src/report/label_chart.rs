//! `label_distribution.png`: training rows per class as horizontal bars on a log axis,
//! each bar annotated with its count, so a 30× imbalance stays readable.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::render_png;
use super::error::{DrawContext, ReportError};
use super::font::FAMILY;

pub(super) const FILE: &str = "label_distribution.png";
pub(super) const WIDTH: u32 = 1000;
const ROW_PX: u32 = 30;
const LABEL_PT: u32 = 15;

/// The picture's size for `classes` classes: a fixed width, one row per class.
pub(super) fn size(classes: usize) -> (u32, u32) {
    (WIDTH, 120 + ROW_PX * classes as u32)
}

/// Renders the chart of `counts` (class name, training rows), classes top to bottom.
pub(super) fn render(counts: &[(String, u64)]) -> Result<Vec<u8>, ReportError> {
    if counts.is_empty() {
        return Err(ReportError::Inconsistent("no classes to chart".into()));
    }
    render_png(FILE, size(counts.len()), |root| draw(root, counts))
}

fn draw(root: &super::canvas::Area<'_>, counts: &[(String, u64)]) -> Result<(), ReportError> {
    let n = counts.len() as i32;
    let label_font = (FAMILY, LABEL_PT).into_font();
    // The label area fits the longest class name instead of truncating it.
    let label_width = counts
        .iter()
        .map(|(name, _)| label_font.box_size(name).map(|(w, _)| w))
        .collect::<Result<Vec<_>, _>>()
        .drawing(FILE)?
        .into_iter()
        .max()
        .unwrap_or(0)
        + 16;
    let max = counts.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1) as f64;
    let total: u64 = counts.iter().map(|(_, c)| c).sum();
    // Bars start below 1 so a single-row class still shows; the headroom keeps the count
    // labels inside the plot.
    let x_range = (0.7f64..max * 4.0).log_scale();
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("training rows per class ({total} rows, log scale)"),
            (FAMILY, 22),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(label_width)
        // An integer range is inclusive in plotters, so `0..n - 1` gives exactly n rows.
        .build_cartesian_2d(x_range, (0..n - 1).into_segmented())
        .drawing(FILE)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(counts.len())
        .y_label_style((FAMILY, LABEL_PT))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) => row_class(counts, *row)
                .map(|(name, _)| name.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("training rows")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .drawing(FILE)?;

    let bar = RGBColor(52, 101, 164);
    chart
        .draw_series(counts.iter().enumerate().filter(|(_, (_, c))| *c > 0).map(
            |(i, (_, count))| {
                let row = n - 1 - i as i32;
                let mut rect = Rectangle::new(
                    [
                        (0.7, SegmentValue::Exact(row)),
                        (*count as f64, SegmentValue::Exact(row + 1)),
                    ],
                    bar.filled(),
                );
                rect.set_margin(4, 4, 0, 0);
                rect
            },
        ))
        .drawing(FILE)?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, (_, count))| {
            let row = n - 1 - i as i32;
            Text::new(
                format!(" {count}"),
                ((*count).max(1) as f64, SegmentValue::CenterOf(row)),
                (FAMILY, LABEL_PT - 1)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .drawing(FILE)?;
    Ok(())
}

/// The class drawn at segment `row`: the first class sits at the top.
fn row_class(counts: &[(String, u64)], row: i32) -> Option<&(String, u64)> {
    let index = counts.len().checked_sub(1 + usize::try_from(row).ok()?)?;
    counts.get(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_top_down() {
        let counts = vec![("a".to_string(), 3), ("b".into(), 1), ("c".into(), 9)];
        assert_eq!(row_class(&counts, 2).unwrap().0, "a");
        assert_eq!(row_class(&counts, 0).unwrap().0, "c");
        assert!(row_class(&counts, 3).is_none());
        assert!(row_class(&counts, -1).is_none());
    }

    #[test]
    fn an_empty_class_list_is_refused() {
        assert!(matches!(render(&[]), Err(ReportError::Inconsistent(_))));
    }
}
