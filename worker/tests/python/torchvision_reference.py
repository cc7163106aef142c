"""Write a randomly initialised torchvision DenseNet and its outputs for the Rust model tests.

Usage: torchvision_reference.py OUT_DIR SIZE [SIZE...]
Writes OUT_DIR/weights.safetensors (state dict without num_batches_tracked, classifier included) and,
per SIZE, OUT_DIR/io_<SIZE>.safetensors with `input` [2, 3, SIZE, SIZE], `features` (torchvision's
pooled features before the classifier) and `logits` (torchvision's classifier applied to them).
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torchvision.models import densenet121


def main(out_dir, sizes):
    torch.manual_seed(0)
    model = densenet121(weights=None)
    # Non-trivial BatchNorm state, so running statistics and affine parameters are really checked.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.classifier.bias.uniform_(-0.5, 0.5)
    model.eval()
    state = {k: v.contiguous().numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(out_dir / "weights.safetensors"))
    for size in sizes:
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            features = F.adaptive_avg_pool2d(F.relu(model.features(x)), 1).flatten(1)
            logits = model(x)
            assert torch.allclose(model.classifier(features), logits, atol=1e-5)
        save_file({"input": x.numpy(), "features": features.numpy(), "logits": logits.numpy()}, str(out_dir / f"io_{size}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]])
