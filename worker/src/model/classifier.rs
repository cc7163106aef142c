//! The full image classifier: DenseNet features, global pooling and the seed's head.

use foldtrain_proto::config::{ModelConfig, Pooling};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use super::config::DenseNetConfig;
use super::densenet::DenseNetFeatures;
use super::head::Head;

/// DenseNet `features.*` -> ReLU -> global max/avg pool -> `head.*` (see the module doc for names).
#[derive(Debug)]
pub struct Classifier {
    features: DenseNetFeatures,
    head: Head,
    pooling: Pooling,
    l1: f64,
    l2: f64,
}

impl Classifier {
    /// Builds the model's variables under `root` (`root / "features"` and `root / "head"`).
    pub fn new(root: &nn::Path, model: &ModelConfig, classes: i64) -> Self {
        let cfg = DenseNetConfig::for_arch(model.arch);
        Self::with_config(root, &cfg, model, classes)
    }

    /// As [`Classifier::new`], with an explicit DenseNet shape instead of `model.arch`.
    pub fn with_config(
        root: &nn::Path,
        cfg: &DenseNetConfig,
        model: &ModelConfig,
        classes: i64,
    ) -> Self {
        // Initialisation draws from libtorch's global generator, which no other thread may
        // advance meanwhile (see `seeded`).
        let (features, head) = super::drawing_alone(|| {
            let features = DenseNetFeatures::new(&(root / "features"), cfg, model.backbone_bn);
            let head = Head::new(
                &(root / "head"),
                features.out_channels(),
                i64::from(model.head_units),
                classes,
            );
            (features, head)
        });
        Self {
            features,
            head,
            pooling: model.pooling,
            l1: model.head_l1,
            l2: model.head_l2,
        }
    }

    /// Width of the pooled feature vector.
    pub fn num_features(&self) -> i64 {
        self.features.out_channels()
    }

    /// Pooled features `[N, C]`: `norm5` output, ReLU (as torchvision's forward), then global pooling.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut f = self.features.forward_t(x, train);
        let _ = f.relu_();
        match self.pooling {
            Pooling::Max => f.amax([2, 3], false),
            Pooling::Avg => f.adaptive_avg_pool2d([1, 1]).flatten(1, -1),
        }
    }

    /// Logits `[N, classes]`; callers apply softmax for probabilities.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(&self.features_t(x, train), train)
    }

    /// Keras `l1_l2(l1, l2)` on the hidden Dense kernel: `l1 * sum|W| + l2 * sum W^2`, a scalar to add to the loss.
    pub fn head_penalty(&self) -> Tensor {
        let w = self.head.dense_kernel();
        w.abs().sum(Kind::Float) * self.l1 + w.square().sum(Kind::Float) * self.l2
    }
}

impl ModuleT for Classifier {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        Classifier::forward_t(self, x, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldtrain_proto::config::Arch;
    use tch::Device;

    fn tiny(pooling: Pooling, head_units: u32) -> ModelConfig {
        ModelConfig {
            arch: Arch::DensenetTiny,
            pooling,
            head_units,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn tiny_model_accepts_small_and_odd_sizes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(&vs.root(), &tiny(Pooling::Max, 16), 5);
        for size in [32, 40, 57, 96] {
            let x = crate::model::seeded(11, || {
                Tensor::randn([2, 3, size, size], (Kind::Float, Device::Cpu))
            });
            assert_eq!(
                model.features_t(&x, false).size(),
                vec![2, 32],
                "size {size}"
            );
            assert_eq!(model.forward_t(&x, true).size(), vec![2, 5], "size {size}");
        }
    }

    #[test]
    fn pooling_is_global_max_or_mean_of_relu_features() {
        let vs = nn::VarStore::new(Device::Cpu);
        let max = Classifier::new(&vs.root(), &tiny(Pooling::Max, 8), 3);
        let avg = Classifier {
            pooling: Pooling::Avg,
            ..Classifier::new(&(vs.root() / "b"), &tiny(Pooling::Avg, 8), 3)
        };
        let x = crate::model::seeded(11, || {
            Tensor::randn([2, 3, 48, 48], (Kind::Float, Device::Cpu))
        });
        let map = max.features.forward_t(&x, false).relu();
        let expected_max = map.amax([2, 3], false);
        assert!(
            max.features_t(&x, false)
                .allclose(&expected_max, 1e-6, 1e-6, false)
        );
        let map_b = avg.features.forward_t(&x, false).relu();
        let expected_avg = map_b.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        assert!(
            avg.features_t(&x, false)
                .allclose(&expected_avg, 1e-5, 1e-6, false)
        );
    }

    #[test]
    fn variable_names_follow_torchvision_and_head_layout() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = ModelConfig {
            head_units: 2048,
            ..ModelConfig::default()
        };
        let _ = Classifier::new(&vs.root(), &model, 14);
        let vars = vs.variables();
        let shape = |n: &str| vars.get(n).unwrap_or_else(|| panic!("missing {n}")).size();
        assert_eq!(shape("features.conv0.weight"), vec![64, 3, 7, 7]);
        assert_eq!(shape("features.norm0.running_var"), vec![64]);
        assert_eq!(
            shape("features.denseblock1.denselayer1.conv1.weight"),
            vec![128, 64, 1, 1]
        );
        assert_eq!(
            shape("features.denseblock3.denselayer24.conv2.weight"),
            vec![32, 128, 3, 3]
        );
        assert_eq!(
            shape("features.transition3.conv.weight"),
            vec![512, 1024, 1, 1]
        );
        assert_eq!(shape("features.norm5.weight"), vec![1024]);
        assert_eq!(shape("head.bn0.running_mean"), vec![1024]);
        assert_eq!(shape("head.dense.weight"), vec![2048, 1024]);
        assert_eq!(shape("head.bn1.bias"), vec![2048]);
        assert_eq!(shape("head.out.weight"), vec![14, 2048]);
        assert_eq!(shape("head.out.bias"), vec![14]);
        // torchvision densenet121 has 7,978,856 parameters, 1,025,000 of them in its classifier.
        let trainable: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        let head: i64 = 2 * 1024 + 1024 * 2048 + 2048 + 2 * 2048 + 2048 * 14 + 14;
        assert_eq!(trainable - head, 7_978_856 - 1_025_000);
        assert!(
            vars.keys()
                .all(|n| n.starts_with("features.") || n.starts_with("head."))
        );
    }

    #[test]
    fn head_penalty_is_keras_l1_l2_of_the_dense_kernel() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            head_l1: 0.01,
            head_l2: 0.02,
            ..tiny(Pooling::Max, 4)
        };
        let model = Classifier::new(&vs.root(), &cfg, 2);
        let w = model.head.dense_kernel();
        let mut kernel = w.shallow_clone();
        tch::no_grad(|| {
            kernel.copy_(&Tensor::from_slice(&[1.0f32, -2.0, 3.0, -4.0]).repeat([4, 8]))
        });
        // per row of 32: |w| sums to 8 * 10 = 80 and w^2 to 8 * 30 = 240; 4 rows.
        let expected = 0.01 * 320.0 + 0.02 * 960.0;
        let got = model.head_penalty().double_value(&[]);
        assert!((got - expected).abs() < 1e-3, "penalty {got} != {expected}");
        // glorot_uniform bounds a fresh 32 -> 4 kernel by sqrt(6 / 36).
        let fresh = Classifier::new(&(vs.root() / "fresh"), &cfg, 2);
        let limit = (6.0f64 / 36.0).sqrt();
        assert!(fresh.head.dense_kernel().abs().max().double_value(&[]) <= limit);
    }

    #[test]
    fn gradients_reach_the_stem() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Classifier::new(&vs.root(), &tiny(Pooling::Max, 8), 3);
        let x = crate::model::seeded(11, || {
            Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu))
        });
        let loss = model.forward_t(&x, true).square().mean(Kind::Float) + model.head_penalty();
        loss.backward();
        let g = vs.variables()["features.conv0.weight"].grad();
        assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
}
