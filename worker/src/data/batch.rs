//! A batch of normalised NCHW images and their labels, and the pixel conversion into it.

use foldtrain_proto::config::Normalize;
use tch::Tensor;

use super::AugmentChoice;

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// N images of 3 x S x S f32 and their labels (-1 for unlabelled test rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    /// Positions of these images in the loader's image list.
    pub indices: Vec<usize>,
    pub image_size: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// `[N, 3, S, S]` float tensor on the CPU.
    pub fn images_tensor(&self) -> Tensor {
        let s = self.image_size as i64;
        Tensor::from_slice(&self.images).view([self.len() as i64, 3, s, s])
    }

    /// `[N]` int64 tensor on the CPU.
    pub fn labels_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.labels)
    }
}

/// Byte value to normalised float, one table per channel: a lookup is cheaper than the
/// arithmetic and gives bit-identical results on every path.
#[derive(Debug, Clone)]
pub(crate) struct NormalizeTable {
    table: [[f32; 256]; 3],
}

impl NormalizeTable {
    pub(crate) fn new(normalize: Normalize) -> Self {
        let mut table = [[0f32; 256]; 3];
        for (c, row) in table.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                let unit = v as f32 / 255.0;
                *out = match normalize {
                    Normalize::Unit => unit,
                    Normalize::Imagenet => (unit - IMAGENET_MEAN[c]) / IMAGENET_STD[c],
                };
            }
        }
        Self { table }
    }

    /// Writes one HWC u8 square of side `size` into `out` (3 x size x size, CHW), applying
    /// the augmentation on the way.
    pub(crate) fn write_chw(
        &self,
        pixels: &[u8],
        size: usize,
        choice: AugmentChoice,
        out: &mut [f32],
    ) {
        let plane = size * size;
        debug_assert_eq!(pixels.len(), plane * 3);
        debug_assert_eq!(out.len(), plane * 3);
        let (r_out, rest) = out.split_at_mut(plane);
        let (g_out, b_out) = rest.split_at_mut(plane);
        let [r_t, g_t, b_t] = &self.table;
        if choice.is_identity() {
            for (i, px) in pixels.chunks_exact(3).enumerate() {
                r_out[i] = r_t[px[0] as usize];
                g_out[i] = g_t[px[1] as usize];
                b_out[i] = b_t[px[2] as usize];
            }
            return;
        }
        for row in 0..size {
            for col in 0..size {
                let (sr, sc) = choice.source_of(row, col, size);
                let src = (sr * size + sc) * 3;
                let dst = row * size + col;
                r_out[dst] = r_t[pixels[src] as usize];
                g_out[dst] = g_t[pixels[src + 1] as usize];
                b_out[dst] = b_t[pixels[src + 2] as usize];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_imagenet_scaling_in_chw_order() {
        // 1x2 image is not square; use a 2x2 with distinct channels.
        let pixels: Vec<u8> = vec![0, 51, 255, 255, 0, 51, 102, 102, 102, 0, 0, 0];
        let mut out = vec![0f32; 12];
        NormalizeTable::new(Normalize::Unit).write_chw(
            &pixels,
            2,
            AugmentChoice::default(),
            &mut out,
        );
        assert_eq!(&out[0..4], &[0.0, 1.0, 0.4, 0.0]); // red plane
        assert_eq!(&out[4..8], &[0.2, 0.0, 0.4, 0.0]); // green plane
        NormalizeTable::new(Normalize::Imagenet).write_chw(
            &pixels,
            2,
            AugmentChoice::default(),
            &mut out,
        );
        assert!((out[1] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((out[8] - (1.0 - 0.406) / 0.225).abs() < 1e-6);
    }

    #[test]
    fn augmented_write_moves_pixels() {
        let pixels: Vec<u8> = (0..12).map(|v| v * 20).collect();
        let table = NormalizeTable::new(Normalize::Unit);
        let mut plain = vec![0f32; 12];
        let mut flipped = vec![0f32; 12];
        table.write_chw(&pixels, 2, AugmentChoice::default(), &mut plain);
        let hflip = AugmentChoice {
            hflip: true,
            ..Default::default()
        };
        table.write_chw(&pixels, 2, hflip, &mut flipped);
        for plane in 0..3 {
            let p = &plain[plane * 4..plane * 4 + 4];
            assert_eq!(
                &flipped[plane * 4..plane * 4 + 4],
                &[p[1], p[0], p[3], p[2]]
            );
        }
    }

    #[test]
    fn tensors_have_batch_shape() {
        let batch = Batch {
            images: vec![0.5; 2 * 3 * 4 * 4],
            labels: vec![1, -1],
            indices: vec![3, 0],
            image_size: 4,
        };
        assert_eq!(batch.images_tensor().size(), [2, 3, 4, 4]);
        assert_eq!(batch.labels_tensor().size(), [2]);
        assert_eq!(batch.labels_tensor().kind(), tch::Kind::Int64);
    }
}
