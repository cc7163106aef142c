//! A floating-point RGB canvas and the soft-edged shapes the synthetic frames are drawn
//! with. Only basic arithmetic and `sqrt` are used, so output is bit-identical everywhere.

pub(crate) type Rgb = [f32; 3];

pub(crate) struct Canvas {
    pub size: usize,
    pub pixels: Vec<Rgb>,
}

impl Canvas {
    pub fn new(size: usize, fill: Rgb) -> Self {
        Self {
            size,
            pixels: vec![fill; size * size],
        }
    }

    /// One pixel, in normalised units (the image is 1 wide).
    pub fn pixel_width(&self) -> f32 {
        1.0 / self.size as f32
    }

    /// Calls `f(dx, dy, pixel)` for each pixel within `reach` of (cx, cy), with the
    /// pixel centre's offset from it in normalised units.
    pub fn around(&mut self, cx: f32, cy: f32, reach: f32, mut f: impl FnMut(f32, f32, &mut Rgb)) {
        let n = self.size as f32;
        let lo = |c: f32| (((c - reach) * n).floor().max(0.0)) as usize;
        let hi = |c: f32| (((c + reach) * n).ceil().min(n)) as usize;
        for y in lo(cy)..hi(cy) {
            for x in lo(cx)..hi(cx) {
                let dx = (x as f32 + 0.5) / n - cx;
                let dy = (y as f32 + 0.5) / n - cy;
                f(dx, dy, &mut self.pixels[y * self.size + x]);
            }
        }
    }

    /// Calls `f(x, y, pixel)` for every pixel, with its centre in normalised units.
    pub fn each(&mut self, mut f: impl FnMut(f32, f32, &mut Rgb)) {
        let n = self.size as f32;
        for (i, p) in self.pixels.iter_mut().enumerate() {
            let (x, y) = ((i % self.size) as f32 + 0.5, (i / self.size) as f32 + 0.5);
            f(x / n, y / n, p);
        }
    }

    /// A filled ellipse with radii (rx, ry), turned by the unit vector (cos, sin).
    #[allow(clippy::too_many_arguments)]
    pub fn ellipse(
        &mut self,
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
        turn: (f32, f32),
        color: Rgb,
        alpha: f32,
    ) {
        let soft = self.pixel_width();
        let (c, s) = turn;
        self.around(cx, cy, rx.max(ry) + soft, |dx, dy, p| {
            let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
            let d = ((u / rx) * (u / rx) + (v / ry) * (v / ry)).sqrt();
            // Distance past the rim, roughly in normalised units.
            let outside = (d - 1.0) * rx.min(ry);
            mix(p, color, alpha * edge(outside, soft));
        });
    }

    pub fn disk(&mut self, cx: f32, cy: f32, r: f32, color: Rgb, alpha: f32) {
        self.ellipse(cx, cy, r, r, (1.0, 0.0), color, alpha);
    }

    /// A circle outline of radius `r` and the given line width.
    pub fn ring(&mut self, cx: f32, cy: f32, r: f32, width: f32, color: Rgb, alpha: f32) {
        let soft = self.pixel_width();
        self.around(cx, cy, r + width + soft, |dx, dy, p| {
            let off = ((dx * dx + dy * dy).sqrt() - r).abs() - width / 2.0;
            mix(p, color, alpha * edge(off, soft));
        });
    }

    /// A line segment with round ends.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(&mut self, a: (f32, f32), b: (f32, f32), width: f32, color: Rgb, alpha: f32) {
        let soft = self.pixel_width();
        let (ex, ey) = (b.0 - a.0, b.1 - a.1);
        let len2 = (ex * ex + ey * ey).max(1e-12);
        let (cx, cy) = ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0);
        let reach = len2.sqrt() / 2.0 + width + soft;
        self.around(cx, cy, reach, |dx, dy, p| {
            let (px, py) = (dx + cx - a.0, dy + cy - a.1);
            let t = ((px * ex + py * ey) / len2).clamp(0.0, 1.0);
            let (qx, qy) = (px - t * ex, py - t * ey);
            let off = (qx * qx + qy * qy).sqrt() - width / 2.0;
            mix(p, color, alpha * edge(off, soft));
        });
    }

    /// Multiplies colours by `factor`, fully at the centre and fading out by radius `r`.
    pub fn tint(&mut self, cx: f32, cy: f32, r: f32, factor: Rgb, strength: f32) {
        self.around(cx, cy, r, |dx, dy, p| {
            let k = falloff((dx * dx + dy * dy) / (r * r)) * strength;
            for (channel, f) in p.iter_mut().zip(factor) {
                *channel *= 1.0 + (f - 1.0) * k;
            }
        });
    }

    /// A lit dome (a bump on the mucosa) with a specular highlight.
    pub fn dome(&mut self, cx: f32, cy: f32, r: f32, color: Rgb, light: (f32, f32), alpha: f32) {
        let soft = self.pixel_width();
        let (lx, ly) = light;
        let lz = (1.0 - lx * lx - ly * ly).max(0.0).sqrt();
        self.around(cx, cy, r + soft, |dx, dy, p| {
            let (nx, ny) = (dx / r, dy / r);
            let nz = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
            let lambert = (nx * lx + ny * ly + nz * lz).max(0.0);
            let mut spec = lambert * lambert;
            spec *= spec;
            spec *= spec;
            let shade = 0.55 + 0.6 * lambert;
            let lit = color.map(|c| (c * shade + 0.5 * spec).min(1.0));
            let d = (dx * dx + dy * dy).sqrt();
            mix(p, lit, alpha * edge(d - r, soft));
        });
    }
}

/// Coverage of a pixel whose centre lies `outside` past a shape's edge: 1 well inside,
/// 0 well outside, linear across one pixel.
pub(crate) fn edge(outside: f32, soft: f32) -> f32 {
    (0.5 - outside / soft).clamp(0.0, 1.0)
}

/// A smooth bump: 1 at t=0 falling to 0 at t=1 (t is squared distance over radius squared).
pub(crate) fn falloff(t: f32) -> f32 {
    if t >= 1.0 { 0.0 } else { (1.0 - t) * (1.0 - t) }
}

pub(crate) fn mix(p: &mut Rgb, color: Rgb, alpha: f32) {
    let a = alpha.clamp(0.0, 1.0);
    for (channel, c) in p.iter_mut().zip(color) {
        *channel += (c - *channel) * a;
    }
}

pub(crate) fn smoothstep(lo: f32, hi: f32, x: f32) -> f32 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// sin(2 pi t), from a polynomial, so that no platform math library is involved.
pub(crate) fn sin_turns(t: f32) -> f32 {
    let x = t - t.floor(); // [0, 1)
    let x = if x > 0.5 { x - 1.0 } else { x }; // (-0.5, 0.5]
    // Parabola through the zeros and peaks, then one refinement step (error < 0.001).
    let y = 8.0 * x - 16.0 * x * x.abs();
    0.225 * (y * y.abs() - y) + y
}

/// A unit vector at `t` turns.
pub(crate) fn turn(t: f32) -> (f32, f32) {
    (sin_turns(t + 0.25), sin_turns(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sin_turns_tracks_sin() {
        for i in 0..200 {
            let t = i as f32 / 37.0 - 2.0;
            let exact = (t * std::f32::consts::TAU).sin();
            assert!((sin_turns(t) - exact).abs() < 2e-3, "t={t}");
        }
    }

    #[test]
    fn shapes_cover_their_area_only() {
        let mut canvas = Canvas::new(32, [0.0; 3]);
        canvas.disk(0.5, 0.5, 0.25, [1.0; 3], 1.0);
        let at = |c: &Canvas, x: usize, y: usize| c.pixels[y * 32 + x][0];
        assert_eq!(at(&canvas, 16, 16), 1.0);
        assert_eq!(at(&canvas, 1, 1), 0.0);
        canvas.segment((0.1, 0.9), (0.9, 0.9), 0.1, [0.0, 1.0, 0.0], 1.0);
        assert_eq!(canvas.pixels[29 * 32 + 16][1], 1.0);
        assert_eq!(canvas.pixels[29 * 32][1], 0.0);
        // A pixel the edge halves is half covered.
        let mut half = Canvas::new(4, [0.0; 3]);
        half.disk(0.5, 0.5, 0.125, [1.0; 3], 1.0);
        assert!(
            (half.pixels[5][0] - 0.5).abs() < 0.3,
            "{:?}",
            half.pixels[5]
        );
    }
}
