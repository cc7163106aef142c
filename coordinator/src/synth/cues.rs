//! The visual cue of each Kvasir-Capsule class, drawn over the mucosa. Sizes, positions
//! and strengths vary, so the classes are learnable without being trivial.

use super::canvas::{Canvas, Rgb, turn};
use super::rng::Rng;

const WHITE: Rgb = [0.97, 0.95, 0.88];
const FRESH_RED: Rgb = [0.74, 0.02, 0.05];
const VESSEL_RED: Rgb = [0.88, 0.06, 0.10];

/// Draws the cue of class `class` (an index into `KVASIR_CLASSES`).
pub(crate) fn paint_cue(canvas: &mut Canvas, class: usize, rng: &mut Rng) {
    // How clearly the finding shows: faint findings make the task harder.
    let s = rng.range(0.5, 1.0);
    let px = canvas.pixel_width();
    match class {
        0 => {} // normal clean mucosa: the mucosa alone
        1 => ileocecal_valve(canvas, rng, s),
        2 => reduced_view(canvas, rng, s, px),
        3 => pylorus(canvas, rng, s, px),
        4 => angiectasia(canvas, rng, s, px),
        5 => ulcer(canvas, rng, s, px),
        6 => foreign_body(canvas, rng, s),
        7 => lymphangiectasia(canvas, rng, s, px),
        8 => erosion(canvas, rng, s, px),
        9 => fresh_blood(canvas, rng, s),
        10 => erythema(canvas, rng, s),
        11 => polyp(canvas, rng, s),
        12 => hematin(canvas, rng, s),
        13 => ampulla(canvas, rng, s, px),
        _ => unreachable!("there are 14 classes"),
    }
}

/// A thick pale lip across the view with a shadow under it.
fn ileocecal_valve(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.15);
    let (rx, ry) = (rng.range(0.28, 0.40), rng.range(0.07, 0.11));
    let t = turn(rng.range(-0.08, 0.08));
    c.ellipse(
        x - 0.02 * t.1,
        y + 0.035 * t.0,
        rx,
        ry * 1.1,
        t,
        [0.30, 0.10, 0.10],
        0.6 * s,
    );
    c.ellipse(x, y, rx, ry, t, [0.94, 0.72, 0.60], s);
}

/// Murky, dark view full of bubbles.
fn reduced_view(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let dark = rng.range(0.45, 0.7);
    let murk = [0.85 * dark, 0.8 * dark, 0.55 * dark];
    c.each(|_, _, p| {
        for (channel, m) in p.iter_mut().zip(murk) {
            *channel *= 1.0 + (m - 1.0) * s;
        }
    });
    for _ in 0..rng.int(6, 14) {
        let (x, y) = rng.point_near_centre(0.42);
        let r = rng.range(0.025, 0.075);
        c.disk(x, y, r, [0.8, 0.78, 0.6], 0.12 * s);
        c.ring(
            x,
            y,
            r,
            (0.012f32).max(1.1 * px),
            [0.96, 0.95, 0.85],
            0.75 * s,
        );
    }
}

/// A dark round opening near the centre with radial folds.
fn pylorus(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let (x, y) = rng.point_near_centre(0.1);
    let r = rng.range(0.06, 0.11);
    let folds = rng.int(6, 10);
    let start = rng.unit();
    for i in 0..folds {
        let (dx, dy) = turn(start + i as f32 / folds as f32 + rng.range(-0.02, 0.02));
        let len = rng.range(0.22, 0.32);
        c.segment(
            (x + dx * r, y + dy * r),
            (x + dx * len, y + dy * len),
            (0.022f32).max(1.5 * px),
            [0.45, 0.12, 0.12],
            0.45 * s,
        );
    }
    c.tint(x, y, r * 2.2, [0.35, 0.25, 0.25], 0.8 * s);
    c.disk(x, y, r, [0.10, 0.03, 0.03], 0.9 * s);
}

/// A small tangle of bright red vessels.
fn angiectasia(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let (x, y) = rng.point_near_centre(0.3);
    let width = (0.012f32).max(1.1 * px);
    for _ in 0..rng.int(3, 6) {
        let (mut px0, mut py0) = (x + rng.range(-0.02, 0.02), y + rng.range(-0.02, 0.02));
        let mut heading = rng.unit();
        for _ in 0..rng.int(3, 5) {
            heading += rng.range(-0.2, 0.2);
            let (dx, dy) = turn(heading);
            let step = rng.range(0.02, 0.035);
            let next = (px0 + dx * step, py0 + dy * step);
            c.segment((px0, py0), next, width, VESSEL_RED, s);
            (px0, py0) = next;
        }
    }
    c.disk(x, y, (0.015f32).max(px), VESSEL_RED, s);
}

/// A white-yellow patch with a red rim.
fn ulcer(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let (x, y) = rng.point_near_centre(0.3);
    let rx = rng.range(0.06, 0.11);
    let ry = rx * rng.range(0.7, 1.0);
    let t = turn(rng.unit());
    let rim = (0.025f32).max(1.5 * px);
    c.ellipse(x, y, rx + rim, ry + rim, t, [0.80, 0.08, 0.08], 0.9 * s);
    c.ellipse(x, y, rx, ry, t, WHITE, s);
}

/// An elongated grey-green object with a glint along it.
fn foreign_body(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    let (rx, ry) = (rng.range(0.14, 0.24), rng.range(0.04, 0.07));
    let t = turn(rng.unit());
    c.ellipse(x, y, rx, ry, t, [0.42, 0.50, 0.38], 0.95 * s);
    c.ellipse(
        x - 0.3 * ry * t.1,
        y + 0.3 * ry * t.0,
        rx * 0.8,
        ry * 0.25,
        t,
        [0.75, 0.82, 0.70],
        0.5 * s,
    );
}

/// A cluster of small white specks.
fn lymphangiectasia(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    let spread = rng.range(0.1, 0.18);
    for _ in 0..rng.int(12, 28) {
        let (dx, dy) = (rng.range(-1.0, 1.0) * spread, rng.range(-1.0, 1.0) * spread);
        let r = rng.range(0.008, 0.016).max(0.7 * px);
        c.disk(x + dx, y + dy, r, WHITE, s * rng.range(0.6, 1.0));
    }
}

/// One to three small pale-yellow spots with a faint red halo.
fn erosion(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    for _ in 0..rng.int(1, 3) {
        let (x, y) = rng.point_near_centre(0.3);
        let r = rng.range(0.02, 0.04).max(1.2 * px);
        c.tint(x, y, r * 2.5, [1.1, 0.7, 0.7], 0.6 * s);
        c.disk(x, y, r, [0.93, 0.86, 0.58], 0.85 * s);
    }
}

/// Pools of bright red blood with glossy glints.
fn fresh_blood(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    for _ in 0..rng.int(2, 5) {
        let (dx, dy) = (rng.range(-0.12, 0.12), rng.range(-0.12, 0.12));
        let r = rng.range(0.05, 0.12);
        let t = turn(rng.unit());
        c.ellipse(
            x + dx,
            y + dy,
            r,
            r * rng.range(0.5, 1.0),
            t,
            FRESH_RED,
            0.9 * s,
        );
        c.disk(
            x + dx - r * 0.3,
            y + dy - r * 0.3,
            r * 0.15,
            [1.0, 0.7, 0.7],
            0.5 * s,
        );
    }
}

/// A diffuse reddened area.
fn erythema(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    c.tint(x, y, rng.range(0.2, 0.32), [1.15, 0.55, 0.6], s);
}

/// A round bump lit from one side.
fn polyp(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    let r = rng.range(0.08, 0.15);
    let light = turn(rng.unit());
    c.tint(
        x + 0.3 * r * light.0,
        y + 0.3 * r * light.1,
        r * 1.4,
        [0.6, 0.5, 0.5],
        0.6 * s,
    );
    c.dome(
        x,
        y,
        r,
        [0.86, 0.50, 0.45],
        (0.6 * light.0, 0.6 * light.1),
        s,
    );
}

/// Dark brown-black patches of old blood.
fn hematin(c: &mut Canvas, rng: &mut Rng, s: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    for _ in 0..rng.int(2, 4) {
        let (dx, dy) = (rng.range(-0.1, 0.1), rng.range(-0.1, 0.1));
        let r = rng.range(0.04, 0.09);
        let t = turn(rng.unit());
        c.ellipse(
            x + dx,
            y + dy,
            r,
            r * rng.range(0.5, 1.0),
            t,
            [0.17, 0.08, 0.04],
            0.85 * s,
        );
    }
}

/// A small nipple-like papilla with a dark central opening.
fn ampulla(c: &mut Canvas, rng: &mut Rng, s: f32, px: f32) {
    let (x, y) = rng.point_near_centre(0.25);
    let r = rng.range(0.045, 0.075);
    let light = turn(rng.unit());
    c.dome(
        x,
        y,
        r,
        [0.92, 0.62, 0.52],
        (0.5 * light.0, 0.5 * light.1),
        s,
    );
    let t = turn(rng.unit());
    c.ellipse(
        x,
        y,
        (0.018f32).max(1.2 * px),
        (0.007f32).max(0.6 * px),
        t,
        [0.22, 0.05, 0.05],
        s,
    );
}
