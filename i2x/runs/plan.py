"""The plan printed before long work: device, model, data size and an estimated time per
stage, derived from a short timed warm-up of the configured model on this machine.

What is timed: a few training steps at ``train.batch_size``, one Grad-CAM batch and one
forward batch. Each stage's estimate multiplies those by the work the config asks for:

- train: every optimizer step, plus a validation pass at each checkpoint;
- explain: Grad-CAM over the analysis set at each checkpoint, and the causal check's
  forward passes; the clustering and the permutation null (CPU work that does not depend
  on the model) come on top and are not in the estimate;
- tune: every fine-tuning step of the study's trials and of the final evaluation
  (each strategy x ``tune.seeds``, two phases each), plus their validation passes. When
  tune acts on findings (the default) the estimate is for a run that finds one, given apart
  from the total; with none, tune takes seconds, which ``main`` prints once explain is done.

When the total is over an hour, :meth:`StagePlan.lines` ends with the flags that cut it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from i2x.explanation.faithfulness import BASELINES
from i2x.explanation.saliency import grad_cam
from i2x.platform.config import Config
from i2x.repair.baselines import BASELINES as BASELINE_STRATEGIES
from i2x.repair.baselines import JTT_LAMBDAS
from i2x.training.batches import to_float
from i2x.training.checkpoints import checkpoint_steps, steps_per_epoch
from i2x.training.data import DataBundle
from i2x.training.loop import make_optimizer, train_step
from i2x.training.models import build_model
from i2x.tuning.comparison import STRATEGIES


@dataclass(frozen=True)
class StagePlan:
    """Estimated seconds per stage and the timings they come from."""

    device: str
    model: str
    width: int
    n_fit: int
    n_analysis: int
    step_s: float
    cam_image_s: float
    forward_image_s: float
    stages: dict[str, float]
    tune_note: str = ""
    cuts: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The plan in words. Acting on findings (``tune_note``), tune's time is not known before
        explain: seconds when the explanation states no shortcut check (``main`` says which once
        explain is done), so it is given apart and left out of the total."""
        sure = {k: v for k, v in self.stages.items() if not (k == "tune" and self.tune_note)}
        total = sum(sure.values())
        head = (f"plan: {self.device}, {self.model} (width {self.width}), {self.n_fit} training images, "
                f"{self.n_analysis} analysed; timed warm-up: {self.step_s:.2f} s per training step, "
                f"{1000 * self.cam_image_s:.1f} ms per Grad-CAM image")
        out = [head]
        for name, s in self.stages.items():
            if name == "tune" and self.tune_note:
                out.append(f"  {name:8s} seconds, or ~ {_clock(s)} {self.tune_note}")
            else:
                out.append(f"  {name:8s} ~ {_clock(s)}")
        extra = " + tune" if len(sure) < len(self.stages) else ""
        out.append(f"  total    ~ {_clock(total)}{extra} (explain: network passes only; clustering and the null come on top)")
        if total + (self.stages.get("tune", 0.0) if extra else 0.0) > LONG_S and self.cuts:
            out.append(f"  over an hour: to cut it, make run OVERRIDES={','.join(self.cuts)} (mlflow run: -P overrides=...; "
                       "i2x train/explain/tune: --overrides ...), or CONFIG=smoke for a one-minute synthetic run")
        return out


LONG_S = 3600.0


def cuts(config: Config, stages: dict[str, float]) -> tuple[str, ...]:
    """Overrides that roughly halve the two longest stages (exact values for this config)."""
    t, tune = config.train, config.tune
    options = {
        "train": [f"train.epochs={max(1, t.epochs // 2)}"] if t.epochs > 1 else [],
        "explain": [f"data.analysis_size={max(200, config.data.analysis_size // 2)}"] if config.data.analysis_size > 400 else [],
        "tune": [f"tune.n_trials={max(2, tune.n_trials // 2)}", f"tune.seeds={max(2, tune.seeds - 1)}"]
        + ([f"tune.epoch_samples={max(1000, tune.epoch_samples // 2)}"] if tune.epoch_samples else []),
    }
    longest = sorted(stages, key=lambda k: -stages[k])[:2]
    return tuple(flag for stage in longest for flag in options.get(stage, []))


def _clock(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, kernel choice
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def estimate(config: Config, data: DataBundle, device: torch.device, repeats: int = 2) -> StagePlan:
    """Time the configured model on this machine and scale to the config's work."""
    t, f, tune = config.train, config.faithfulness, config.tune
    model = build_model(config.model, data.channels, data.num_classes, data.mean, data.std).to(device)
    sample = to_float(data.train_x[data.fit_idx[: t.batch_size]]).to(device)
    labels = data.train_y[data.fit_idx[: t.batch_size]].to(device)
    model.init_from_data(sample)
    optimizer = make_optimizer(model, config, lr=1e-6)  # the configured optimizer; a tiny rate keeps the weights sane
    model.train()
    step_s = _timed(lambda: train_step(model, optimizer, sample, labels, t.label_smoothing), repeats)
    model.eval()
    cam_batch = sample[: min(len(sample), 128)]
    cam_s = _timed(lambda: grad_cam(model, model.target_layer, cam_batch, labels[: len(cam_batch)]), repeats) / len(cam_batch)
    with torch.no_grad():
        forward_s = _timed(lambda: model(sample), repeats) / len(sample)

    n_fit, n_val, n = len(data.fit_idx), len(data.val_idx), len(data.analysis_idx)
    spe = steps_per_epoch(n_fit, t.batch_size)
    checkpoints = len(checkpoint_steps(spe, t.epochs, t.checkpoint_fractions, t.checkpoint_every_epoch)) + 1
    train_s = spe * t.epochs * step_s + checkpoints * n_val * forward_s
    claims = 3 * data.num_classes  # about: shared and specialised per class, uncertain pairs
    # every fill deletes again (the first verifies, the others confirm)
    deletion = claims * f.max_images * (1 + len(BASELINES) * f.draws) * len(f.fills) * forward_s if f.enabled else 0.0
    explain_s = checkpoints * n * cam_s + deletion
    per_epoch = (tune.epoch_samples or n_fit) / t.batch_size * step_s
    mean_epochs = sum(tune.epochs_choices) / len(tune.epochs_choices)
    trials = tune.n_trials * 2 * mean_epochs * (per_epoch + n_val * forward_s)
    final = len(STRATEGIES) * tune.seeds * 2 * max(mean_epochs, 1) * (per_epoch + n_val * forward_s)
    if tune.paper_whole_epochs and tune.epoch_samples:  # the paper and its control run whole epochs
        final += 2 * tune.seeds * 2 * (spe * step_s - per_epoch)
    tune_s = trials + final + tune.seeds * len(STRATEGIES) * len(data.test_y) * forward_s
    note = ""
    if tune.act_on != "candidates":  # one epoch per trial and per strategy and seed; see i2x.repair
        runs = tune.n_trials + len(JTT_LAMBDAS) + (len(BASELINE_STRATEGIES) + len(tune.repair_strategies)) * tune.seeds
        tune_s = runs * per_epoch + (tune.n_trials * n_val + len(data.train_y) + runs * len(data.test_y)) * forward_s
        note = "if the explanation states a shortcut check to act on (main says which after explain)"
    stages = {"train": train_s, "explain": explain_s, "tune": tune_s}
    return StagePlan(device.type, config.model.name, config.model.width, n_fit, n, step_s, cam_s, forward_s, stages, note,
                     cuts(config, stages))
