//! Per-image flips and quarter turns, drawn deterministically from (augment seed, image
//! index) so that training replays exactly after a resume.

use foldtrain_proto::config::Augment;
use foldtrain_proto::rng::{derive_seed, mix64};

/// What to do to one image: rotate by `quarter_turns` x 90 degrees counter-clockwise, then
/// flip left-right, then flip top-bottom.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AugmentChoice {
    pub quarter_turns: u8,
    pub hflip: bool,
    pub vflip: bool,
}

impl AugmentChoice {
    pub fn is_identity(&self) -> bool {
        *self == AugmentChoice::default()
    }

    /// The source pixel (row, column) that lands at output (`row`, `col`) in a square of side `size`.
    #[inline]
    pub(crate) fn source_of(&self, row: usize, col: usize, size: usize) -> (usize, usize) {
        let last = size - 1;
        let row = if self.vflip { last - row } else { row };
        let col = if self.hflip { last - col } else { col };
        // A counter-clockwise quarter turn puts source (c, last - r) at (r, c); undo k of them.
        match self.quarter_turns % 4 {
            0 => (row, col),
            1 => (col, last - row),
            2 => (last - row, last - col),
            _ => (last - col, row),
        }
    }
}

/// Each enabled augmentation applies with probability 1/2 (flips) or picks one of four
/// turns uniformly (rot90); disabled ones never apply.
pub fn choose_augment(augments: &[Augment], seed: u64, index: usize) -> AugmentChoice {
    if augments.is_empty() {
        return AugmentChoice::default();
    }
    let bits = mix64(derive_seed(&[seed, index as u64]));
    AugmentChoice {
        hflip: augments.contains(&Augment::Hflip) && bits & 1 == 1,
        vflip: augments.contains(&Augment::Vflip) && (bits >> 1) & 1 == 1,
        quarter_turns: if augments.contains(&Augment::Rot90) {
            ((bits >> 2) & 3) as u8
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a choice to a single-channel square for checking the geometry.
    fn apply(choice: AugmentChoice, grid: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(grid.len());
        for r in 0..size {
            for c in 0..size {
                let (sr, sc) = choice.source_of(r, c, size);
                out.push(grid[sr * size + sc]);
            }
        }
        out
    }

    const GRID: [u8; 4] = [1, 2, 3, 4]; // [[1, 2], [3, 4]]

    #[test]
    fn geometry_matches_numpy_conventions() {
        let turn = |k| AugmentChoice {
            quarter_turns: k,
            ..Default::default()
        };
        // np.rot90([[1, 2], [3, 4]]) == [[2, 4], [1, 3]]
        assert_eq!(apply(turn(1), &GRID, 2), [2, 4, 1, 3]);
        assert_eq!(apply(turn(2), &GRID, 2), [4, 3, 2, 1]);
        assert_eq!(apply(turn(3), &GRID, 2), [3, 1, 4, 2]);
        let hflip = AugmentChoice {
            hflip: true,
            ..Default::default()
        };
        let vflip = AugmentChoice {
            vflip: true,
            ..Default::default()
        };
        assert_eq!(apply(hflip, &GRID, 2), [2, 1, 4, 3]);
        assert_eq!(apply(vflip, &GRID, 2), [3, 4, 1, 2]);
        // Turn first, then flip: rot90 then fliplr.
        let both = AugmentChoice {
            quarter_turns: 1,
            hflip: true,
            vflip: false,
        };
        assert_eq!(apply(both, &GRID, 2), [4, 2, 3, 1]);
        // Every choice is a permutation of the pixels.
        let grid: Vec<u8> = (0..9).collect();
        for k in 0..4 {
            for (h, v) in [(false, false), (true, false), (false, true), (true, true)] {
                let mut out = apply(
                    AugmentChoice {
                        quarter_turns: k,
                        hflip: h,
                        vflip: v,
                    },
                    &grid,
                    3,
                );
                out.sort_unstable();
                assert_eq!(out, grid);
            }
        }
    }

    #[test]
    fn choices_are_deterministic_and_respect_the_enabled_set() {
        let all = [Augment::Hflip, Augment::Vflip, Augment::Rot90];
        let choices: Vec<_> = (0..400).map(|i| choose_augment(&all, 9, i)).collect();
        assert_eq!(
            choices,
            (0..400)
                .map(|i| choose_augment(&all, 9, i))
                .collect::<Vec<_>>()
        );
        assert_ne!(
            choices,
            (0..400)
                .map(|i| choose_augment(&all, 10, i))
                .collect::<Vec<_>>()
        );
        let hflips = choices.iter().filter(|c| c.hflip).count();
        assert!((150..250).contains(&hflips), "{hflips}");
        for k in 0..4 {
            assert!(choices.iter().any(|c| c.quarter_turns == k));
        }
        for i in 0..100 {
            let only_h = choose_augment(&[Augment::Hflip], 9, i);
            assert!(!only_h.vflip && only_h.quarter_turns == 0);
            assert!(choose_augment(&[], 9, i).is_identity());
        }
    }
}
