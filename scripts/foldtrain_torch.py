"""Rebuild a foldtrain classifier in PyTorch from its safetensors weights (e.g. best.safetensors).

The model is torchvision's DenseNet `features` followed by the head foldtrain trains:
ReLU -> global max/avg pool -> BatchNorm1d -> Linear(head_units) + ReLU -> BatchNorm1d -> Linear(classes).
The head's BatchNorms use the Keras defaults foldtrain mirrors (momentum 0.99, i.e. PyTorch's 0.01, eps 1e-3).

    from foldtrain_torch import load_foldtrain_model
    model = load_foldtrain_model("best.safetensors", pooling="max")
    probs = model.predict_proba(images)  # images: float [N, 3, H, W], normalised as in training
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from torch import nn
from torchvision.models import DenseNet

ARCHS = {
    "densenet121": dict(growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64),
    "densenet-tiny": dict(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16),
}

KERAS_BN = dict(momentum=0.01, eps=1e-3)


class FoldtrainClassifier(nn.Module):
    """DenseNet features + the seed's Keras head, with foldtrain's parameter names."""

    def __init__(self, arch="densenet121", classes=1000, head_units=2048, pooling="max"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
        if pooling not in ("max", "avg"):
            raise ValueError(f"unknown pooling {pooling!r}; expected 'max' or 'avg'")
        self.features = DenseNet(**ARCHS[arch], bn_size=4, drop_rate=0).features
        width = self.features.norm5.num_features
        self.pooling = pooling
        self.head = nn.Sequential(
            OrderedDict(
                bn0=nn.BatchNorm1d(width, **KERAS_BN),
                dense=nn.Linear(width, head_units),
                relu=nn.ReLU(),
                bn1=nn.BatchNorm1d(head_units, **KERAS_BN),
                out=nn.Linear(head_units, classes),
            )
        )

    def pooled_features(self, x):
        f = F.relu(self.features(x))
        if self.pooling == "max":
            return torch.amax(f, dim=(2, 3))
        return F.adaptive_avg_pool2d(f, 1).flatten(1)

    def forward(self, x):
        """Logits [N, classes]."""
        return self.head(self.pooled_features(x))

    @torch.no_grad()
    def predict_proba(self, x):
        return torch.softmax(self(x), dim=1)


def load_foldtrain_model(path, classes=None, arch="densenet121", pooling="max", head_units=None):
    """Load weights written by foldtrain; classes and head_units are read from the file when not given.

    Returns the model in eval mode. Raises ValueError naming the tensors that do not fit.
    """
    # safetensors.numpy keeps the dependency list to numpy (safetensors.torch also needs `packaging`).
    state = {k: torch.from_numpy(v) for k, v in load_file(str(path)).items()}
    if "head.out.weight" not in state:
        raise ValueError(f"{path}: no head.out.weight; not a foldtrain model file")
    file_classes, file_units = state["head.out.weight"].shape
    classes = file_classes if classes is None else classes
    head_units = file_units if head_units is None else head_units
    model = FoldtrainClassifier(arch, classes, head_units, pooling)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # foldtrain does not store BatchNorm's step counter; everything else must match.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]} (arch {arch!r})")
    return model.eval()
