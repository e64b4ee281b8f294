"""The usual PyTorch MNIST pipeline, written the pytorch/examples way, for side-by-side timing.

A map-style Dataset hands out one image at a time through a per-sample transform (ToTensor +
Normalize + optional random affine, written out because torchvision does not import here), a
DataLoader collates batches, and the loops iterate over it. Two recipes:

  examples: pytorch/examples/mnist exactly: its CNN (1.2M params), Adadelta lr 1, StepLR 0.7
            per epoch, batch 64, test batch 1000.
  ours:     the same model and recipe as `mnist-lab train` (TrainConfig defaults, or overrides
            given as KEY=VALUE), so only the data pipeline differs.

Prints one JSON object: seconds_to_target (from process start, data load included), epochs,
accuracies, images/s, peak memory.
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before the imports, as for mnist-lab)
import json  # noqa: E402
import resource  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from mnist_lab.augment import Augment, random_affine  # noqa: E402
from mnist_lab.cli import _parse_kv  # noqa: E402
from mnist_lab.config import TrainConfig  # noqa: E402
from mnist_lab.data import load  # noqa: E402
from mnist_lab.models import build_model  # noqa: E402
from mnist_lab.optim import learning_rate, make_optimizer  # noqa: E402


class MNISTDataset(Dataset):
    """One sample at a time, transformed in Python, as torchvision.datasets.MNIST does."""

    def __init__(self, split, mean: float, std: float, aug: Augment | None = None):
        self.images, self.labels = split.images.numpy(), split.labels.numpy()
        self.mean, self.std, self.aug = mean, std, aug

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0)  # ToTensor
        if self.aug is not None and self.aug.active:  # RandomAffine, per sample
            x = random_affine(x.unsqueeze(0), self.aug, torch.default_generator)[0]
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


def test_accuracy(model, loader) -> float:
    """Accuracy over a DataLoader, the examples' test()."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader.dataset)


def main() -> None:
    """Train until the target accuracy or the last epoch; print a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=("examples", "ours"), default="examples")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--subset", type=int, default=0, help="train on the first N images only")
    p.add_argument("--data-dir")
    p.add_argument("overrides", nargs="*", type=_parse_kv, help="TrainConfig KEY=VALUE")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    if args.recipe == "examples":
        cfg = TrainConfig(model="pytorch_example", optimizer="adadelta", lr=1.0, batch_size=64,
                          scheduler="step", step_size=1, gamma=0.7, rotate=0, epochs=args.epochs)
    else:
        cfg = TrainConfig(**dict(args.overrides), seed=args.seed).validate()
    data = load(cfg.dataset, args.data_dir)
    train_split = data.train
    if args.subset:
        train_split = train_split.take(torch.arange(args.subset))
    aug = Augment(cfg.rotate, cfg.translate, cfg.scale, cfg.shear)
    train_loader = DataLoader(MNISTDataset(train_split, data.info.mean, data.info.std, aug),
                              batch_size=cfg.batch_size, shuffle=True)
    test_loader = DataLoader(MNISTDataset(data.test, data.info.mean, data.info.std),
                             batch_size=1000)
    model = build_model(cfg)
    opt = make_optimizer(cfg, model)
    steps, total = 0, cfg.epochs * len(train_loader)
    history, reached, train_s, test_s = [], None, 0.0, 0.0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        for x, y in train_loader:
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, steps, total, len(train_loader))
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            steps += 1
        t1 = time.perf_counter()
        train_s += t1 - t0
        acc = test_accuracy(model, test_loader)
        test_s += time.perf_counter() - t1
        history.append({"epoch": epoch, "test_accuracy": acc, "seconds": time.perf_counter() - t0})
        if acc >= args.target:
            reached = time.perf_counter() - START
            break
    print(json.dumps({
        "pipeline": f"reference/{args.recipe}", "model": cfg.model, "seed": args.seed,
        "target": args.target, "reached_target": reached is not None,
        "seconds_to_target": reached, "epochs_run": len(history),
        "test_accuracy": history[-1]["test_accuracy"], "history": history,
        "train_images_per_s": steps * cfg.batch_size / train_s,
        "infer_images_per_s": len(history) * len(data.test) / test_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
