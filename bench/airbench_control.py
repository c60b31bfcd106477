"""Control for issue 14's GPU goal: the published airbench recipes, run unchanged on the
CIFAR-10 copy that this project trains on.

airbench (K. Jordan, PyPI ``airbench``) reports 94.01% (airbench94), 95.01% (airbench95) and
96.05% (airbench96) on the original CIFAR-10. Run here on the offline JPEG copy
(``../shared/datasets/cifar10-jpeg.tar.gz``, lossy), the same recipes tell apart two causes of
our fast net's ceiling near 91-92%:

- airbench reaches its published numbers on the JPEG copy: the gap is our implementation;
- airbench also stops short by about as much: the gap is the data.

The JPEG tree is written in airbench's own cache format (``cifar10/{train,test}.pt``: uint8
images ``(N, 32, 32, 3)``, labels, class names) in a scratch folder, so its loader never
downloads anything. GPU only (airbench times with CUDA events); airbench itself is not a
dependency of i2x: install it for this script alone (``pip install airbench``).

    python bench/airbench_control.py --tarball ../shared/datasets/cifar10-jpeg.tar.gz --runs 94:3,95:2,96:1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def tree_to_tensors(root: Path) -> dict:
    """An ImageFolder tree ``root/<class>/*.jpg`` as airbench's cache dict (classes sorted, as ImageFolder)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return {"images": torch.from_numpy(np.stack(images)), "labels": torch.tensor(labels), "classes": classes}


def prepare(tarball: Path, folder: Path) -> None:
    """Unpack the JPEG copy and write ``folder/cifar10/{train,test}.pt``."""
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, filter="data")
    (folder / "cifar10").mkdir(exist_ok=True)
    for split in ("train", "test"):
        data = tree_to_tensors(next(folder.glob(f"*/{split}")))
        torch.save(data, folder / "cifar10" / f"{split}.pt")
        print(f"{split}: {len(data['labels'])} images, {len(data['classes'])} classes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz")
    parser.add_argument("--runs", default="94:3,95:2,96:1",
                        help="recipe[@epochs]:count, comma-separated (recipes 93, 94, 95, 96; epochs: the recipe's own when not given)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("airbench_control: needs a CUDA GPU (airbench times with CUDA events)")
    import airbench

    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        prepare(args.tarball.resolve(), folder)
        os.chdir(folder)  # airbench's loaders read ./cifar10/{train,test}.pt
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        for item in args.runs.split(","):
            spec, count = item.split(":")
            recipe, _, epochs = spec.partition("@")  # 96@80: airbench96 for 80 epochs instead of its own
            train_fn = getattr(airbench, f"train{recipe}")
            getattr(airbench, f"warmup{recipe}")()  # one step (cuDNN tuning); it returns early only when verbose
            for run in range(int(count)):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model = train_fn(verbose=False, run=run, **({"epochs": float(epochs)} if epochs else {}))
                torch.cuda.synchronize()
                wall = time.perf_counter() - t0
                row = {"recipe": f"airbench{recipe}" + (f" x{epochs} epochs" if epochs else ""), "run": run, "train_wall_s": round(wall, 2),
                       "test_acc": airbench.evaluate(model, test, tta_level=0),
                       "test_acc_tta2": airbench.evaluate(model, test, tta_level=2)}
                results.append(row)
                print(json.dumps(row), flush=True)
    print("| recipe | published (original CIFAR-10) | runs | test, TTA 2 (mean, min-max) | train wall (s) |\n|---|---|---|---|---|")
    published = {"airbench93": 93.0, "airbench94": 94.01, "airbench95": 95.01, "airbench96": 96.05}  # at the recipes' own epochs
    for recipe in dict.fromkeys(r["recipe"] for r in results):
        rows = [r for r in results if r["recipe"] == recipe]
        accs = [100 * r["test_acc_tta2"] for r in rows]
        print(f"| {recipe} | {published[recipe]:.2f}% |" if recipe in published else f"| {recipe} | - |", end="")
        print(f" {len(rows)} | {statistics.mean(accs):.2f}% "
              f"({min(accs):.2f}-{max(accs):.2f}) | {statistics.mean(r['train_wall_s'] for r in rows):.1f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
