//! The classification head: BN -> Dense+ReLU -> BN -> Dense, with Keras semantics.

use tch::Tensor;
use tch::nn::{self, BatchNorm, Linear, ModuleT};

/// Keras `BatchNormalization()` defaults: momentum 0.99 (the weight kept on the running value,
/// PyTorch's momentum is the weight of the new batch, hence 0.01) and epsilon 1e-3.
const KERAS_BN_MOMENTUM: f64 = 0.01;
const KERAS_BN_EPS: f64 = 1e-3;

fn keras_bn(p: nn::Path, c: i64) -> BatchNorm {
    let cfg = nn::BatchNormConfig {
        momentum: KERAS_BN_MOMENTUM,
        eps: KERAS_BN_EPS,
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm1d(p, c, cfg)
}

/// Keras `Dense` initialisation: `glorot_uniform` kernel (U(-l, l), l = sqrt(6 / (fan_in + fan_out)))
/// and a zero bias. The weight is stored in PyTorch's `[out, in]` layout so it loads into `nn.Linear`.
fn keras_dense(p: nn::Path, c_in: i64, c_out: i64) -> Linear {
    let limit = (6.0 / (c_in + c_out) as f64).sqrt();
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Uniform {
            lo: -limit,
            up: limit,
        },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, c_in, c_out, cfg)
}

/// `head.bn0`, `head.dense`, `head.bn1`, `head.out`.
#[derive(Debug)]
pub struct Head {
    bn0: BatchNorm,
    dense: Linear,
    bn1: BatchNorm,
    out: Linear,
}

impl Head {
    pub fn new(p: &nn::Path, in_features: i64, units: i64, classes: i64) -> Self {
        Self {
            bn0: keras_bn(p / "bn0", in_features),
            dense: keras_dense(p / "dense", in_features, units),
            bn1: keras_bn(p / "bn1", units),
            out: keras_dense(p / "out", units, classes),
        }
    }

    /// The kernel of the hidden Dense layer, the one the seed regularises.
    pub fn dense_kernel(&self) -> &Tensor {
        &self.dense.ws
    }
}

impl ModuleT for Head {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply_t(&self.bn0, train)
            .apply(&self.dense)
            .relu()
            .apply_t(&self.bn1, train)
            .apply(&self.out)
    }
}
