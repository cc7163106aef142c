//! `confusion_matrix.png`: the out-of-fold confusion matrix as a heatmap. Colour is the
//! row-normalised share (recall per true class, so rare classes are as visible as common
//! ones); each cell prints its raw count.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::canvas::{Area, render_png};
use super::error::{DrawContext, ReportError};
use super::font::FAMILY;

pub(super) const FILE: &str = "confusion_matrix.png";
const CELL_PX: u32 = 48;
const LABEL_PT: u32 = 14;
/// Room for class names left of and below the grid.
const LABEL_PX: u32 = 230;
const TOP_PX: u32 = 60;
const RIGHT_PX: u32 = 30;

/// The picture's size for `classes` classes (a square grid plus label margins).
pub(super) fn size(classes: usize) -> (u32, u32) {
    let grid = CELL_PX * classes as u32;
    (LABEL_PX + grid + RIGHT_PX, TOP_PX + grid + LABEL_PX)
}

/// Renders `matrix[true][predicted]` with `classes` naming rows and columns.
pub(super) fn render(classes: &[String], matrix: &[Vec<u64>]) -> Result<Vec<u8>, ReportError> {
    let n = classes.len();
    if n == 0 || matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(ReportError::Inconsistent(format!(
            "confusion matrix is not {n}×{n} for {n} classes"
        )));
    }
    render_png(FILE, size(n), |root| draw(root, classes, matrix))
}

/// The grid's top-left corner and cell size, in pixels.
const X0: i32 = LABEL_PX as i32;
const Y0: i32 = TOP_PX as i32;
const CELL: i32 = CELL_PX as i32;

fn draw(root: &Area<'_>, classes: &[String], matrix: &[Vec<u64>]) -> Result<(), ReportError> {
    let n = classes.len() as i32;
    let total: u64 = matrix.iter().flatten().sum();
    root.draw(&Text::new(
        format!("out-of-fold confusion matrix ({total} rows; colour: share of the true class)"),
        (X0 + n * CELL / 2, TOP_PX as i32 / 2),
        (FAMILY, 18)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .drawing(FILE)?;
    for (t, row) in matrix.iter().enumerate() {
        draw_row(root, t, row)?;
    }
    draw_labels(root, classes)
}

/// The cells of true class `t`: coloured by their share of the row, printing the count.
fn draw_row(root: &Area<'_>, t: usize, row: &[u64]) -> Result<(), ReportError> {
    let count_pt = if CELL_PX >= 44 { 14 } else { 11 };
    let row_total: u64 = row.iter().sum();
    for (p, &count) in row.iter().enumerate() {
        let share = if row_total == 0 {
            0.0
        } else {
            count as f64 / row_total as f64
        };
        let (x, y) = (X0 + p as i32 * CELL, Y0 + t as i32 * CELL);
        root.draw(&Rectangle::new(
            [(x, y), (x + CELL, y + CELL)],
            heat(share).filled(),
        ))
        .drawing(FILE)?;
        root.draw(&Rectangle::new(
            [(x, y), (x + CELL, y + CELL)],
            RGBColor(200, 200, 200).stroke_width(1),
        ))
        .drawing(FILE)?;
        if count > 0 {
            let ink = if share > 0.5 { WHITE } else { BLACK };
            root.draw(&Text::new(
                count.to_string(),
                (x + CELL / 2, y + CELL / 2),
                (FAMILY, count_pt)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))
            .drawing(FILE)?;
        }
    }
    Ok(())
}

/// Class names along both edges of the grid, and the two axis titles.
fn draw_labels(root: &Area<'_>, classes: &[String]) -> Result<(), ReportError> {
    let n = classes.len() as i32;
    let label = (FAMILY, LABEL_PT).into_font().color(&BLACK);
    for (i, name) in classes.iter().enumerate() {
        let centre = i as i32 * CELL + CELL / 2;
        root.draw(&Text::new(
            name.clone(),
            (X0 - 8, Y0 + centre),
            label.clone().pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .drawing(FILE)?;
        // Column names read bottom-to-top, hanging from the grid's lower edge.
        root.draw(&Text::new(
            name.clone(),
            (X0 + centre, Y0 + n * CELL + 8),
            label
                .clone()
                .transform(FontTransform::Rotate270)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .drawing(FILE)?;
    }
    let axis = (FAMILY, 16).into_font().color(&BLACK);
    root.draw(&Text::new(
        "predicted",
        (X0 + n * CELL / 2, Y0 + n * CELL + LABEL_PX as i32 - 16),
        axis.clone().pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .drawing(FILE)?;
    root.draw(&Text::new(
        "true",
        (12, Y0 - 16),
        axis.pos(Pos::new(HPos::Left, VPos::Center)),
    ))
    .drawing(FILE)?;
    Ok(())
}

/// White for 0, deep blue for 1.
fn heat(share: f64) -> RGBColor {
    let s = share.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * s).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heat_runs_from_white_to_blue() {
        assert_eq!(heat(0.0), RGBColor(255, 255, 255));
        assert_eq!(heat(1.0), RGBColor(8, 48, 107));
        assert_eq!(heat(7.0), heat(1.0));
    }

    #[test]
    fn a_matrix_of_the_wrong_shape_is_refused() {
        let classes = vec!["a".to_string(), "b".into()];
        let err = render(&classes, &[vec![1, 2]]).unwrap_err();
        assert!(err.to_string().contains("not 2×2"), "{err}");
    }
}
