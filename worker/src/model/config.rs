//! DenseNet architecture parameters (growth rate, block sizes, stem width).

use foldtrain_proto::config::Arch;

/// The shape of a DenseNet; torchvision's `DenseNet(growth_rate, block_config, num_init_features, bn_size)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseNetConfig {
    /// Channels each dense layer adds.
    pub growth_rate: i64,
    /// Dense layers per block; a transition (halving channels and resolution) sits between blocks.
    pub block_config: Vec<i64>,
    /// Channels out of the 7x7 stem convolution.
    pub num_init_features: i64,
    /// Bottleneck width multiplier: the 1x1 convolution of a dense layer outputs `bn_size * growth_rate`.
    pub bn_size: i64,
}

impl DenseNetConfig {
    /// DenseNet121 as in torchvision (and Keras): growth 32, blocks 6-12-24-16, 64 stem channels.
    pub fn densenet121() -> Self {
        Self {
            growth_rate: 32,
            block_config: vec![6, 12, 24, 16],
            num_init_features: 64,
            bn_size: 4,
        }
    }

    /// A very small DenseNet for tests and CPU demos: growth 8, blocks 2-2-2-2, 16 stem channels.
    pub fn tiny() -> Self {
        Self {
            growth_rate: 8,
            block_config: vec![2, 2, 2, 2],
            num_init_features: 16,
            bn_size: 4,
        }
    }

    pub fn for_arch(arch: Arch) -> Self {
        match arch {
            Arch::Densenet121 => Self::densenet121(),
            Arch::DensenetTiny => Self::tiny(),
        }
    }

    /// Channels out of `features.norm5`, i.e. the width of the pooled feature vector.
    pub fn num_features(&self) -> i64 {
        let mut channels = self.num_init_features;
        for (i, &layers) in self.block_config.iter().enumerate() {
            channels += layers * self.growth_rate;
            if i + 1 < self.block_config.len() {
                channels /= 2;
            }
        }
        channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_widths_match_torchvision() {
        // torchvision: densenet121 classifier has in_features 1024.
        assert_eq!(DenseNetConfig::densenet121().num_features(), 1024);
        // 16 + 16 = 32 -> 16; +16 = 32 -> 16; +16 -> 16; +16 = 32
        assert_eq!(DenseNetConfig::tiny().num_features(), 32);
        assert_eq!(
            DenseNetConfig::for_arch(Arch::DensenetTiny),
            DenseNetConfig::tiny()
        );
    }
}
