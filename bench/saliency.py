"""Benchmark: native batched Grad-CAM vs pytorch-grad-cam vs the forward-only floor.

Measured in one run on the same models, inputs, layer and targets:
  - native:  i2x.saliency.grad_cam (one forward + autograd.grad w.r.t. the layer)
  - library: pytorch_grad_cam.GradCAM at its best batch size among --library-batches
  - floor:   model(x) under torch.no_grad(), the same batch size as native
Prints ms per image and the ratios. Not a test: nothing here asserts a speed.

    python bench/saliency.py                  # CPU, both models
    python bench/saliency.py --device cuda --n 8192
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from i2x.config import ModelConfig
from i2x.models import build_model
from i2x.saliency import grad_cam

CASES = {  # name: (model, channels, size)
    "cnn-mnist": ("cnn", 1, 28),
    "resnet18-cifar": ("resnet18", 3, 32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def bench_case(name: str, n: int, batch: int, library_batches: list[int], device: torch.device, repeats: int) -> dict:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    arch, channels, size = CASES[name]
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=arch), channels, 10).to(device).eval()
    x = torch.rand(n, channels, size, size, device=device)
    targets = torch.randint(0, 10, (n,), device=device)
    layer = model.get_submodule(model.target_layer)

    def native() -> None:
        for s in range(0, n, batch):
            grad_cam(model, model.target_layer, x[s : s + batch], targets[s : s + batch])

    def floor() -> None:
        with torch.no_grad():
            for s in range(0, n, batch):
                model(x[s : s + batch])

    cam = GradCAM(model=model, target_layers=[layer])
    wanted = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]

    def library(b: int):
        def run() -> None:
            for s in range(0, n, b):
                cam(x[s : s + b], wanted[s : s + b])
        return run

    t_native = _time(native, device, repeats)
    t_floor = _time(floor, device, repeats)
    lib = {b: _time(library(b), device, max(1, repeats // 2)) for b in library_batches}
    best_b = min(lib, key=lib.get)
    ms = lambda t: 1000 * t / n  # noqa: E731
    return {
        "case": name, "device": str(device), "n": n, "batch": batch,
        "native_ms": ms(t_native), "floor_ms": ms(t_floor),
        "library_ms": ms(lib[best_b]), "library_best_batch": best_b,
        "library_all_ms": {str(b): ms(t) for b, t in lib.items()},
        "library_over_native": lib[best_b] / t_native, "native_over_floor": t_native / t_floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=0, help="images per case (default: 1024 CPU cnn, 256 CPU resnet, 8192 GPU)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--library-batches", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.cases.split(","):
        n = args.n or (8192 if device.type == "cuda" else (1024 if name.startswith("cnn") else 256))
        rows.append(bench_case(name, n, args.batch, [int(b) for b in args.library_batches.split(",")], device, args.repeats))
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nGrad-CAM benchmark on {gpu}, torch {torch.__version__}\n")
    print("| case | N | native ms/img | pytorch-grad-cam ms/img (best batch) | forward-only floor ms/img | library/native | native/floor |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['n']} | {r['native_ms']:.4f} | {r['library_ms']:.4f} (b={r['library_best_batch']}) | "
              f"{r['floor_ms']:.4f} | {r['library_over_native']:.2f}x | {r['native_over_floor']:.2f}x |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
