//! DenseNet feature extractor with torchvision's module layout and parameter names.

use foldtrain_proto::config::BackboneBn;
use tch::Tensor;
use tch::nn::{self, BatchNorm, Conv2D, ModuleT};

use super::config::DenseNetConfig;

/// torchvision initialises convolutions with `kaiming_normal_` (fan-in, ReLU gain) and
/// BatchNorm with weight 1, bias 0; tch's BatchNorm default weight init is uniform, so it is set here.
///
/// The kernel is stored channels-last (see [`channels_last`]); loading weights copies into
/// it, and saving them makes a contiguous copy, so the names and files are unchanged.
fn conv(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    let mut conv = nn::conv2d(p, c_in, c_out, k, cfg);
    // The VarStore holds a handle to the same tensor, so it sees the new layout too.
    tch::no_grad(|| conv.ws.set_data(&channels_last(&conv.ws)));
    conv
}

/// `x` (4-D, NCHW) with its values laid out channels-last (NHWC strides), as PyTorch's
/// `memory_format=torch.channels_last`: oneDNN's and cuDNN's convolutions run on that
/// layout without reordering, which makes a DenseNet step about a quarter quicker on the
/// CPU. Shape, values and indexing are unchanged; only the strides differ.
pub(crate) fn channels_last(x: &Tensor) -> Tensor {
    let size = x.size();
    let [_, c, h, w] = size[..] else {
        return x.shallow_clone();
    };
    let strides = [c * h * w, 1, w * c, c];
    if x.stride() == strides {
        return x.shallow_clone();
    }
    let mut out = Tensor::empty_strided(&size, strides, (x.kind(), x.device()));
    // A differentiable copy: gradients flow back to `x` where it needs them.
    out.copy_(x);
    out
}

fn bn(p: nn::Path, c: i64, style: BackboneBn) -> BatchNorm {
    let cfg = nn::BatchNormConfig {
        momentum: style.momentum(),
        eps: style.eps(),
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, c, cfg)
}

/// BN then in-place ReLU, as torchvision's `norm -> relu(inplace=True)` pairs.
fn bn_relu(x: &Tensor, norm: &BatchNorm, train: bool) -> Tensor {
    let mut y = x.apply_t(norm, train);
    let _ = y.relu_();
    y
}

#[derive(Debug)]
struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2D,
    norm2: BatchNorm,
    conv2: Conv2D,
}

impl DenseLayer {
    fn new(p: nn::Path, c_in: i64, growth: i64, bn_size: i64, style: BackboneBn) -> Self {
        Self {
            norm1: bn(&p / "norm1", c_in, style),
            conv1: conv(&p / "conv1", c_in, bn_size * growth, 1, 1, 0),
            norm2: bn(&p / "norm2", bn_size * growth, style),
            conv2: conv(&p / "conv2", bn_size * growth, growth, 3, 1, 1),
        }
    }

    /// One layer sees the concatenation of the block input and every earlier layer's output.
    fn forward_t(&self, inputs: &[Tensor], train: bool) -> Tensor {
        let x = Tensor::cat(inputs, 1);
        let x = bn_relu(&x, &self.norm1, train).apply(&self.conv1);
        bn_relu(&x, &self.norm2, train).apply(&self.conv2)
    }
}

#[derive(Debug)]
struct DenseBlock {
    layers: Vec<DenseLayer>,
}

impl DenseBlock {
    fn forward_t(&self, x: Tensor, train: bool) -> Tensor {
        let mut features = Vec::with_capacity(self.layers.len() + 1);
        features.push(x);
        for layer in &self.layers {
            let y = layer.forward_t(&features, train);
            features.push(y);
        }
        Tensor::cat(&features, 1)
    }
}

#[derive(Debug)]
struct Transition {
    norm: BatchNorm,
    conv: Conv2D,
}

impl Transition {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        bn_relu(x, &self.norm, train).apply(&self.conv).avg_pool2d(
            [2, 2],
            [2, 2],
            [0, 0],
            false,
            true,
            None,
        )
    }
}

/// `features.*` of torchvision's DenseNet: stem, dense blocks with transitions, and `norm5`.
/// The output is `norm5`'s, before the final ReLU (as torchvision's `model.features(x)`).
#[derive(Debug)]
pub struct DenseNetFeatures {
    conv0: Conv2D,
    norm0: BatchNorm,
    blocks: Vec<DenseBlock>,
    transitions: Vec<Transition>,
    norm5: BatchNorm,
    out_channels: i64,
}

impl DenseNetFeatures {
    /// Builds the layers under `p` (normally `root / "features"`), every BatchNorm with the
    /// momentum and epsilon of `style`.
    pub fn new(p: &nn::Path, cfg: &DenseNetConfig, style: BackboneBn) -> Self {
        let conv0 = conv(p / "conv0", 3, cfg.num_init_features, 7, 2, 3);
        let norm0 = bn(p / "norm0", cfg.num_init_features, style);
        let mut channels = cfg.num_init_features;
        let mut blocks = Vec::with_capacity(cfg.block_config.len());
        let mut transitions = Vec::with_capacity(cfg.block_config.len().saturating_sub(1));
        for (i, &n_layers) in cfg.block_config.iter().enumerate() {
            let bp = p / format!("denseblock{}", i + 1);
            let layers = (0..n_layers)
                .map(|j| {
                    let c_in = channels + j * cfg.growth_rate;
                    DenseLayer::new(
                        &bp / format!("denselayer{}", j + 1),
                        c_in,
                        cfg.growth_rate,
                        cfg.bn_size,
                        style,
                    )
                })
                .collect();
            blocks.push(DenseBlock { layers });
            channels += n_layers * cfg.growth_rate;
            if i + 1 < cfg.block_config.len() {
                let tp = p / format!("transition{}", i + 1);
                transitions.push(Transition {
                    norm: bn(&tp / "norm", channels, style),
                    conv: conv(&tp / "conv", channels, channels / 2, 1, 1, 0),
                });
                channels /= 2;
            }
        }
        let norm5 = bn(p / "norm5", channels, style);
        Self {
            conv0,
            norm0,
            blocks,
            transitions,
            norm5,
            out_channels: channels,
        }
    }

    /// Channels of the output feature map.
    pub fn out_channels(&self) -> i64 {
        self.out_channels
    }
}

impl ModuleT for DenseNetFeatures {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // The kernels are channels-last; an input in the same layout keeps every layer in it.
        let x = bn_relu(&channels_last(x).apply(&self.conv0), &self.norm0, train);
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_t(x, train);
            if let Some(t) = self.transitions.get(i) {
                x = t.forward_t(&x, train);
            }
        }
        x.apply_t(&self.norm5, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// After one training batch from fresh statistics (mean 0, var 1), PyTorch's BatchNorm
    /// holds `momentum * batch_mean` and `(1 - momentum) + momentum * unbiased_batch_var`.
    #[test]
    fn running_statistics_follow_the_chosen_momentum() {
        let x = crate::model::seeded(11, || {
            Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu))
        }) * 3.0
            + 1.5;
        for style in [BackboneBn::Keras, BackboneBn::Torchvision] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = crate::model::drawing_alone(|| {
                DenseNetFeatures::new(&(vs.root() / "features"), &DenseNetConfig::tiny(), style)
            });
            let stem = tch::no_grad(|| x.apply(&net.conv0));
            let _ = tch::no_grad(|| net.forward_t(&x, true));
            let m = style.momentum();
            let batch_mean = stem.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
            let batch_var = stem.var_dim([0i64, 2, 3].as_slice(), true, false);
            let vars = vs.variables();
            let mean_err = (&vars["features.norm0.running_mean"] - batch_mean * m)
                .abs()
                .max()
                .double_value(&[]);
            let var_err = (&vars["features.norm0.running_var"] - (batch_var * m + (1.0 - m)))
                .abs()
                .max()
                .double_value(&[]);
            assert!(
                mean_err < 1e-5 && var_err < 1e-4,
                "{style:?}: {mean_err} {var_err}"
            );
        }
        assert_eq!(BackboneBn::Keras.momentum(), 0.01);
        assert_eq!(BackboneBn::Torchvision.momentum(), 0.1);
    }
}
