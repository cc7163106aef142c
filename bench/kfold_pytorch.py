"""The PyTorch peer of `foldtrain run` for bench/kfold_vs_pytorch.sh: the seed notebook's k-fold
recipe as a plain PyTorch + scikit-learn script, on one process.

Reads the seed layout (Training_set.csv filename,label + train/; Testing_set.csv + test/), splits
with StratifiedKFold(shuffle=True, random_state=seed), and per fold trains torchvision's
densenet121 features (Keras DenseNet121 BatchNorm: momentum 0.01 in PyTorch terms, eps 1.001e-5)
-> ReLU -> global max pool -> BN -> Dense(2048, ReLU, L1 0.01 + L2 0.01 on the kernel) -> BN ->
Dense(classes), cross-entropy with label smoothing, Adam with Keras' decay
lr / (1 + decay * iterations), best weights by val_loss, early stopping and reduce-LR-on-plateau
as Keras does them. The folds' test softmax are averaged into predictions.csv.

Images are decoded once (PIL, RGB, NEAREST resize as flow_from_dataframe does, /255) and kept in
memory, as foldtrain's worker caches decoded images.

Prints `pytorch wall_s=<s> oof_accuracy=<a> oof_macro_f1=<f> ...` as its last line.
"""

import argparse
import copy
import csv
import time
from pathlib import Path

_started = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models import densenet121  # noqa: E402

_imported = time.perf_counter()

KERAS_HEAD_BN = dict(momentum=0.01, eps=1e-3)
KERAS_DENSENET_BN = dict(momentum=0.01, eps=1.001e-5)


class Net(nn.Module):
    """torchvision densenet121 features + the notebook's Keras head."""

    def __init__(self, classes, head_units=2048):
        super().__init__()
        self.features = densenet121(weights=None).features
        for m in self.features.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum, m.eps = KERAS_DENSENET_BN["momentum"], KERAS_DENSENET_BN["eps"]
        width = self.features.norm5.num_features
        self.bn0 = nn.BatchNorm1d(width, **KERAS_HEAD_BN)
        self.dense = nn.Linear(width, head_units)
        self.bn1 = nn.BatchNorm1d(head_units, **KERAS_HEAD_BN)
        self.out = nn.Linear(head_units, classes)
        for layer in (self.dense, self.out):  # Keras Dense: glorot_uniform kernel, zero bias
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        f = torch.amax(F.relu(self.features(x)), dim=(2, 3))
        return self.out(self.bn1(F.relu(self.dense(self.bn0(f)))))

    def penalty(self, l1, l2):
        w = self.dense.weight
        return l1 * w.abs().sum() + l2 * w.square().sum()


def read_rows(csv_path):
    with open(csv_path, newline="") as f:
        return list(csv.DictReader(f))


def load_images(folder, names, size):
    """uint8 decode -> float [N, 3, size, size] in [0, 1]."""
    arrays = []
    for name in names:
        with Image.open(folder / name) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.NEAREST)
            arrays.append(np.asarray(im, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x.float().div_(255.0)


class Plateau:
    """Keras ReduceLROnPlateau (mode min, cooldown 0) and EarlyStopping (min_delta 0) on val_loss."""

    def __init__(self, lr_patience, lr_factor, lr_min_delta, stop_patience):
        self.lr_patience, self.lr_factor, self.lr_min_delta = lr_patience, lr_factor, lr_min_delta
        self.stop_patience = stop_patience
        self.lr_best, self.lr_wait = float("inf"), 0
        self.stop_best, self.stop_wait = float("inf"), 0

    def reduce_lr(self, val_loss):
        if val_loss < self.lr_best - self.lr_min_delta:
            self.lr_best, self.lr_wait = val_loss, 0
            return False
        self.lr_wait += 1
        if self.lr_wait >= self.lr_patience:
            self.lr_wait = 0
            return True
        return False

    def stop(self, val_loss, epoch_index):
        self.stop_wait += 1
        if val_loss < self.stop_best:
            self.stop_best, self.stop_wait = val_loss, 0
        return self.stop_wait >= self.stop_patience and epoch_index > 0


@torch.no_grad()
def evaluate(model, x, y, batch_size, smoothing, penalty):
    """Row-weighted mean loss (plus the head's penalty, as Keras adds model.losses) and softmax."""
    model.eval()
    total, probs = 0.0, []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        if y is not None:
            yb = y[i : i + batch_size]
            total += float(F.cross_entropy(logits, yb, label_smoothing=smoothing)) * len(yb)
        probs.append(torch.softmax(logits, dim=1))
    loss = total / len(x) + penalty if y is not None else float("nan")
    return loss, torch.cat(probs)


def train_fold(k, x_tr, y_tr, x_va, y_va, x_te, classes, a):
    torch.manual_seed(a.seed + k)
    model = Net(classes, a.head_units)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, eps=1e-7)  # Keras' epsilon
    lr_scale = [1.0]  # ReduceLROnPlateau's factor on top of the Keras decay
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_scale[0] / (1.0 + a.decay * it))
    plateau = Plateau(a.patience, 0.1, 1e-4, a.patience)
    best_loss, best_epoch, best_state = float("inf"), 0, None
    n = len(x_tr)
    for epoch in range(1, a.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n)
        seen = correct = 0
        loss_sum = 0.0
        for i in range(0, n, a.batch_size):
            idx = order[i : i + a.batch_size]
            if len(idx) == 1 and n > 1:
                continue  # BatchNorm cannot normalise one row in training mode
            xb, yb = x_tr[idx], y_tr[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=a.label_smoothing)
            loss = loss + model.penalty(a.l1, a.l2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
        with torch.no_grad():
            penalty = float(model.penalty(a.l1, a.l2))
        val_loss, val_probs = evaluate(model, x_va, y_va, a.batch_size, a.label_smoothing, penalty)
        val_acc = float((val_probs.argmax(1) == y_va).float().mean())
        lr = opt.param_groups[0]["lr"]
        print(
            f"fold {k} epoch {epoch}: loss {loss_sum / max(seen, 1):.4f} acc {correct / max(seen, 1):.4f} "
            f"val_loss {val_loss:.4f} val_acc {val_acc:.4f} lr {lr:.3g} {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        stop = plateau.stop(val_loss, epoch - 1)
        if plateau.reduce_lr(val_loss):
            lr_scale[0] *= 0.1
            for group in opt.param_groups:  # from the next batch on, not one step later
                group["lr"] = a.lr * lr_scale[0] / (1.0 + a.decay * sched.last_epoch)
        if stop:
            break
    model.load_state_dict(best_state)
    fold_dir = a.out / "folds" / str(k)
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, fold_dir / "best.pt")
    _, oof = evaluate(model, x_va, None, a.batch_size, a.label_smoothing, 0.0)
    _, test = evaluate(model, x_te, None, a.batch_size, a.label_smoothing, 0.0) if len(x_te) else (0, None)
    return best_epoch, best_loss, oof, test


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with Training_set.csv, train/, ...")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--decay", type=float, default=1e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--l1", type=float, default=0.01)
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--head-units", type=int, default=2048)
    ap.add_argument("--patience", type=int, default=5)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    train_rows = read_rows(a.data / "Training_set.csv")
    labels = np.array([r["label"] for r in train_rows])
    classes = sorted(set(labels.tolist()))
    y = torch.tensor([classes.index(c) for c in labels])
    x = load_images(a.data / "train", [r["filename"] for r in train_rows], a.image_size)
    test_csv = a.data / "Testing_set.csv"
    test_names = [r["filename"] for r in read_rows(test_csv)] if test_csv.exists() else []
    x_te = load_images(a.data / "test", test_names, a.image_size) if test_names else x[:0]
    load_s = time.perf_counter() - t0
    print(f"loaded {len(x)} train and {len(x_te)} test images, {len(classes)} classes, in {load_s:.1f}s", flush=True)

    oof = torch.zeros(len(x), len(classes))
    test_sum = torch.zeros(len(x_te), len(classes))
    skf = StratifiedKFold(n_splits=a.folds, shuffle=True, random_state=a.seed)
    for k, (tr, va) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        fold_started = time.perf_counter()
        tr, va = torch.from_numpy(tr), torch.from_numpy(va)
        best_epoch, best_loss, fold_oof, fold_test = train_fold(
            k, x[tr], y[tr], x[va], y[va], x_te, len(classes), a
        )
        oof[va] = fold_oof
        if fold_test is not None:
            test_sum += fold_test
        fold_s = time.perf_counter() - fold_started
        print(f"fold {k}: best epoch {best_epoch} val_loss {best_loss:.4f}, {fold_s:.1f}s", flush=True)

    predicted = (test_sum / a.folds).argmax(1).tolist()
    with open(a.out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "label"])
        w.writerows((name, classes[p]) for name, p in zip(test_names, predicted))
    oof_pred = oof.argmax(1).numpy()
    acc = accuracy_score(y.numpy(), oof_pred)
    f1 = f1_score(y.numpy(), oof_pred, average="macro", labels=range(len(classes)), zero_division=0)
    wall = time.perf_counter() - _started
    print(
        f"pytorch wall_s={wall:.1f} import_s={_imported - _started:.1f} oof_accuracy={acc:.4f} oof_macro_f1={f1:.4f} "
        f"threads={torch.get_num_threads()} folds={a.folds} epochs={a.epochs} image_size={a.image_size}"
    )


if __name__ == "__main__":
    main()
