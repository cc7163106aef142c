//! The capsule-camera look shared by every frame: pink-red textured mucosa with folds,
//! LED glints, a dark vignette and sensor noise. Frames of one video share a style.

use super::canvas::{Canvas, sin_turns, smoothstep, turn};
use super::rng::Rng;

/// What frames of one video have in common.
#[derive(Debug, Clone)]
pub(crate) struct VideoStyle {
    base: [f32; 3],
    fold_turn: f32,
    fold_freq: f32,
    fold_depth: f32,
    vignette: f32,
    texture_seed: u64,
}

impl VideoStyle {
    pub fn new(rng: &mut Rng) -> Self {
        Self {
            base: [
                rng.range(0.72, 0.88),
                rng.range(0.36, 0.50),
                rng.range(0.32, 0.44),
            ],
            fold_turn: rng.unit(),
            fold_freq: rng.range(1.5, 4.0),
            fold_depth: rng.range(0.15, 0.35),
            vignette: rng.range(0.55, 0.85),
            texture_seed: rng.next_u64(),
        }
    }
}

/// Value noise: random values on a grid, smoothly interpolated.
struct Noise {
    grid: usize,
    values: Vec<f32>,
}

impl Noise {
    fn new(grid: usize, rng: &mut Rng) -> Self {
        let values = (0..(grid + 1) * (grid + 1))
            .map(|_| rng.range(-1.0, 1.0))
            .collect();
        Self { grid, values }
    }

    /// Samples at (x, y) in [0, 1]^2 (clamped).
    fn at(&self, x: f32, y: f32) -> f32 {
        let g = self.grid as f32;
        let (fx, fy) = ((x * g).clamp(0.0, g - 1e-3), (y * g).clamp(0.0, g - 1e-3));
        let (ix, iy) = (fx as usize, fy as usize);
        let (tx, ty) = (
            smoothstep(0.0, 1.0, fx - ix as f32),
            smoothstep(0.0, 1.0, fy - iy as f32),
        );
        let v = |i: usize, j: usize| self.values[j * (self.grid + 1) + i];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * tx;
        let bottom = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * tx;
        top + (bottom - top) * ty
    }
}

/// Paints the mucosa: the video's colour and coarse texture, shifted a little per frame,
/// fine per-frame texture, folds, and a few LED glints.
pub(crate) fn paint_mucosa(canvas: &mut Canvas, style: &VideoStyle, rng: &mut Rng) {
    let coarse = Noise::new(5, &mut Rng::new(style.texture_seed));
    let fine = Noise::new(14, rng);
    let (shift_x, shift_y) = (rng.range(-0.08, 0.08), rng.range(-0.08, 0.08));
    let (fc, fs) = turn(style.fold_turn + rng.range(-0.03, 0.03));
    let phase = rng.unit();
    let tint = [
        rng.range(-0.03, 0.03),
        rng.range(-0.03, 0.03),
        rng.range(-0.03, 0.03),
    ];
    canvas.each(|x, y, p| {
        let light = 1.0 + 0.12 * coarse.at(x * 0.8 + 0.1 + shift_x, y * 0.8 + 0.1 + shift_y);
        let grain = 0.06 * fine.at(x, y);
        let wave = 0.5 + 0.5 * sin_turns((x * fc + y * fs) * style.fold_freq + phase);
        let valley = wave * wave * wave * style.fold_depth;
        let b = light + grain - valley;
        // Valleys look redder: green and blue fall faster than red.
        *p = [
            (style.base[0] + tint[0]) * b,
            (style.base[1] + tint[1]) * (b - 0.4 * valley),
            (style.base[2] + tint[2]) * (b - 0.4 * valley),
        ];
    });
    for _ in 0..rng.int(0, 3) {
        let (cx, cy) = rng.point_near_centre(0.4);
        let r = rng.range(0.008, 0.025).max(0.8 * canvas.pixel_width());
        let alpha = rng.range(0.4, 0.9);
        canvas.disk(cx, cy, r, [1.0, 0.98, 0.95], alpha);
    }
}

/// Darkens towards the rim of the round capsule view; the corners go black.
pub(crate) fn paint_vignette(canvas: &mut Canvas, style: &VideoStyle) {
    canvas.each(|x, y, p| {
        let (dx, dy) = (x - 0.5, y - 0.5);
        let r = (dx * dx + dy * dy).sqrt() * 2.0;
        let falloff =
            (1.0 - style.vignette * smoothstep(0.35, 1.0, r)) * ((1.12 - r) * 6.0).clamp(0.0, 1.0);
        for c in p.iter_mut() {
            *c *= falloff;
        }
    });
}

/// Adds sensor noise and converts to 8-bit RGB.
pub(crate) fn finish(canvas: &Canvas, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(canvas.pixels.len() * 3);
    for p in &canvas.pixels {
        let noise = rng.range(-0.02, 0.02);
        for c in p.iter() {
            out.push(((c + noise).clamp(0.0, 1.0) * 255.0 + 0.5) as u8);
        }
    }
    out
}
