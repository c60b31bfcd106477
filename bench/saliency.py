"""Benchmark: native batched Grad-CAM vs pytorch-grad-cam vs the forward-only floor.

Fair by construction, all in one run on the same model, inputs, layer, targets and batch:
  - native:  i2x.explanation.saliency.grad_cam, then upsampled to the input size, the same output
             pytorch-grad-cam returns;
  - library: pytorch_grad_cam.GradCAM, built fresh in each round and released after it,
             so its hooks are never registered while the others are timed;
  - floor:   model(x) under torch.no_grad().
Each round times the three once, in an order rotated round by round; every method gets the
same number of rounds. Ratios are per round, reported as the median and the range.
Peak memory of one batch is measured per method in a fresh process (Linux VmHWM reset
through /proc/self/clear_refs on CPU, max_memory_allocated on CUDA).
Nothing here asserts a speed.

    python bench/saliency.py                                   # CPU, every case
    python bench/saliency.py --cases resnet50-224-layer4 --rounds 7
    python bench/saliency.py --model tv:resnet50 --layer layer3 --size 160
    python bench/saliency.py --device cuda --n 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CASES = {  # name: (model, channels, input size, layer or "" for the model's own)
    "cnn-mnist": ("cnn", 1, 28, ""),
    "resnet18-cifar": ("resnet18", 3, 32, ""),
    "resnet50-224-layer4": ("tv:resnet50", 3, 224, "layer4"),
    "resnet50-224-layer2": ("tv:resnet50", 3, 224, "layer2"),
}
METHODS = ("native", "library", "floor")


def build(arch: str, channels: int) -> tuple[torch.nn.Module, str]:
    """An i2x registry model with 10 classes (its own target layer), or ``tv:NAME``, a
    torchvision ImageNet model with 1000 classes (give the layer)."""
    from i2x.platform.config import ModelConfig
    from i2x.training.models import build_model

    if arch.startswith("tv:"):
        import torchvision

        return getattr(torchvision.models, arch.removeprefix("tv:"))(num_classes=1000), ""
    model = build_model(ModelConfig(name=arch), channels, 10)
    return model, model.target_layer


def setup(case: dict, device: torch.device, n: int):
    torch.manual_seed(0)
    model, default_layer = build(case["model"], case["channels"])
    model = model.to(device).eval()
    layer = case["layer"] or default_layer
    x = torch.rand(n, case["channels"], case["size"], case["size"], device=device)
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    targets = torch.randint(0, classes, (n,), device=device)
    return model, layer, x, targets


def runner(method: str, model, layer: str, x: torch.Tensor, targets: torch.Tensor, batch: int):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from i2x.explanation.saliency import grad_cam, upsample

    size = tuple(x.shape[-2:])
    wanted = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]

    def native() -> None:
        for s in range(0, len(x), batch):
            upsample(grad_cam(model, layer, x[s : s + batch], targets[s : s + batch]).maps, size)

    def library() -> None:
        cam = GradCAM(model=model, target_layers=[model.get_submodule(layer)])
        try:
            for s in range(0, len(x), batch):
                cam(x[s : s + batch], wanted[s : s + batch])
        finally:
            cam.activations_and_grads.release()

    def floor() -> None:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                model(x[s : s + batch])

    return {"native": native, "library": library, "floor": floor}[method]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_case(case: dict, device: torch.device, n: int, batch: int, rounds: int) -> dict:
    model, layer, x, targets = setup(case, device, n)
    fns = {m: runner(m, model, layer, x, targets, batch) for m in METHODS}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(rounds):
        order = METHODS[r % 3 :] + METHODS[: r % 3]
        for m in order:
            _sync(device)
            start = time.perf_counter()
            fns[m]()
            _sync(device)
            times[m].append(time.perf_counter() - start)
    lib_native = [lib / nat for lib, nat in zip(times["library"], times["native"], strict=True)]
    native_floor = [nat / flo for nat, flo in zip(times["native"], times["floor"], strict=True)]
    return {
        "layer": layer,
        "ms_per_image": {m: 1000 * statistics.median(t) / n for m, t in times.items()},
        "library_over_native": (statistics.median(lib_native), min(lib_native), max(lib_native)),
        "native_over_floor": (statistics.median(native_floor), min(native_floor), max(native_floor)),
    }


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(case: dict, method: str, device: torch.device, batch: int) -> float:
    """Peak extra memory (MiB) of one batch of ``method``, measured in this fresh process."""
    model, layer, x, targets = setup(case, device, batch)
    fn = runner(method, model, layer, x, targets, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    fn()
    return (_rss_kib("VmHWM") - base) / 1024


def memory_case(name: str, case: dict, device: torch.device, batch: int) -> dict[str, float]:
    peaks = {}
    for method in METHODS:
        spec = json.dumps({"case": case, "method": method, "device": str(device), "batch": batch})
        out = subprocess.run([sys.executable, __file__, "--memory-child", spec], capture_output=True, text=True, check=True)
        peaks[method] = float(out.stdout.strip().splitlines()[-1])
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--model", default="", help="instead of --cases: an i2x model name, or tv:NAME for torchvision's")
    parser.add_argument("--layer", default="", help="with --model: the target layer (default: the model's own)")
    parser.add_argument("--size", type=int, default=224, help="with --model: input size")
    parser.add_argument("--channels", type=int, default=3, help="with --model: input channels")
    parser.add_argument("--n", type=int, default=0, help="images per round (default: by case and device)")
    parser.add_argument("--batch", type=int, default=0, help="batch for every method (default: 256, 16 at 224 px)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--out", default="", help="also write the rows as JSON here")
    parser.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        spec = json.loads(args.memory_child)
        print(memory_child(spec["case"], spec["method"], torch.device(spec["device"]), spec["batch"]))
        return
    device = torch.device(args.device)
    if args.model:
        cases = {f"{args.model}-{args.size}-{args.layer or 'default'}": (args.model, args.channels, args.size, args.layer)}
    else:
        unknown = set(args.cases.split(",")) - set(CASES)
        if unknown:
            parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
        cases = {c: CASES[c] for c in args.cases.split(",")}
    rows = []
    for name, (arch, channels, size, layer) in cases.items():
        case = {"model": arch, "channels": channels, "size": size, "layer": layer}
        big = size >= 128
        batch = args.batch or (16 if big else 256)
        n = args.n or (32 if big else 256) * (8 if device.type == "cuda" else 1)
        print(f"[{name}] timing {args.rounds} interleaved rounds of {n} images, batch {batch} ...", file=sys.stderr, flush=True)
        row = {"case": name, "n": n, "batch": batch, **time_case(case, device, n, batch, args.rounds)}
        if not args.no_memory:
            row["peak_mib"] = memory_case(name, case, device, batch)
        rows.append(row)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nGrad-CAM benchmark on {where}, torch {torch.__version__}, {args.rounds} interleaved rounds; "
          f"ratios: median [min-max] over rounds; every method returns input-sized maps\n")
    print("| case | layer | N | batch | native ms/img | pytorch-grad-cam ms/img | floor ms/img | library/native | native/floor | peak MiB native / library / floor | memory library/native |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms, ln, nf = r["ms_per_image"], r["library_over_native"], r["native_over_floor"]
        peak = r.get("peak_mib")
        mem = f"{peak['native']:.0f} / {peak['library']:.0f} / {peak['floor']:.0f}" if peak else "-"
        mem_ratio = f"{peak['library'] / max(peak['native'], 1e-9):.1f}x" if peak else "-"
        print(f"| {r['case']} | {r['layer']} | {r['n']} | {r['batch']} | {ms['native']:.3f} | {ms['library']:.3f} | {ms['floor']:.3f} | "
              f"{ln[0]:.2f}x [{ln[1]:.2f}-{ln[2]:.2f}] | {nf[0]:.2f}x [{nf[1]:.2f}-{nf[2]:.2f}] | {mem} | {mem_ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
