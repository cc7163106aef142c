"""Convert a torchvision DenseNet state dict (.pth) into a safetensors file foldtrain can load.

Usage:
    python scripts/convert_torchvision_weights.py [SRC.pth] OUT.safetensors

SRC defaults to torchvision's cached ImageNet weights
($TORCH_HOME or ~/.cache/torch)/hub/checkpoints/densenet121-a639ec97.pth; nothing is downloaded.
Only `features.*` tensors are written (torchvision's classifier is for ImageNet's 1000 classes and
the BatchNorm step counters are not needed); old-style names such as `norm.1` are renamed to `norm1`.
"""

import os
import re
import sys
from pathlib import Path

import torch
from safetensors.numpy import save_file

# torchvision's own fix-up for checkpoints saved before module names lost their dots.
LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def default_source():
    home = os.environ.get("TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch"))
    return Path(home) / "hub" / "checkpoints" / "densenet121-a639ec97.pth"


def convert(src, dst):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    out = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")
        m = LEGACY.match(name)
        if m:
            name = m.group(1) + m.group(2)
        if not name.startswith("features.") or name.endswith("num_batches_tracked"):
            continue
        out[name] = tensor.detach().to(torch.float32).contiguous().numpy()
    if not out:
        raise SystemExit(f"{src}: no features.* tensors; is it a torchvision DenseNet state dict?")
    save_file(out, str(dst))
    return len(out)


def main(argv):
    if len(argv) == 2:
        src, dst = Path(argv[0]), Path(argv[1])
    elif len(argv) == 1:
        src, dst = default_source(), Path(argv[0])
    else:
        raise SystemExit(__doc__)
    if not src.is_file():
        raise SystemExit(f"{src}: no such file; pass the path of a torchvision densenet .pth state dict")
    n = convert(src, dst)
    print(f"wrote {n} tensors to {dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
