"""PyTorch eager reference for bench/train_step.rs: torchvision densenet121 + the same head, loss and Adam.

Prints `pytorch img_per_s=<x>`.
"""

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from foldtrain_torch import FoldtrainClassifier  # noqa: E402

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


class KerasAdam:
    """Per-parameter TensorFlow ApplyAdam with Keras decay, the same update as worker/src/train/adam.rs."""

    def __init__(self, params, lr=1e-3, decay=1e-4):
        self.params = [p for p in params if p.requires_grad]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.lr, self.decay, self.iterations = lr, decay, 0

    def zero_grad(self):
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self):
        t = self.iterations + 1
        lr = self.lr / (1 + self.decay * self.iterations)
        alpha = lr * (1 - BETA_2**t) ** 0.5 / (1 - BETA_1**t)
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.lerp_(p.grad, 1 - BETA_1)
            v.lerp_(p.grad.square(), 1 - BETA_2)
            p.sub_((m * alpha) / (v.sqrt() + EPSILON))
        self.iterations += 1


class Scaler:
    """torch.amp.GradScaler's kernels, as worker/src/train/amp.rs uses them (it needs no torch Optimizer)."""

    def __init__(self, device):
        self.scale = torch.full((1,), 65536.0, device=device)
        self.growth = torch.zeros(1, dtype=torch.int32, device=device)
        self.found_inf = torch.zeros(1, device=device)

    def unscale(self, grads):
        self.found_inf.zero_()
        inv = self.scale.double().reciprocal().float()
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, inv)
        return self.found_inf.item() > 0

    def update(self):
        torch._amp_update_scale_(self.scale, self.growth, self.found_inf, 2.0, 0.5, 2000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--amp", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    device = torch.device(a.device)
    classes = 14
    model = FoldtrainClassifier("densenet121", classes, 2048, "max").to(device).train()
    opt = KerasAdam(model.parameters())
    scaler = Scaler(device)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device)
    y = torch.randint(classes, (a.batch,), device=device)

    def step():
        opt.zero_grad()
        with torch.autocast(device.type, enabled=a.amp):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        w = model.head.dense.weight
        loss = loss + 0.01 * w.abs().sum() + 0.01 * w.square().sum()
        if a.amp:
            (loss * scaler.scale).backward()
            if not scaler.unscale([p.grad for p in opt.params if p.grad is not None]):
                opt.step()
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return loss

    for _ in range(a.warmup):
        step().item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    loss = loss.item()
    secs = time.perf_counter() - start
    print(
        f"pytorch img_per_s={a.steps * a.batch / secs:.2f} steps_per_s={a.steps / secs:.3f} "
        f"loss={loss:.4f} threads={torch.get_num_threads()} amp={a.amp}"
    )


if __name__ == "__main__":
    main()
