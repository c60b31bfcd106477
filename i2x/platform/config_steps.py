"""The settings of the method's analysis and tuning steps (2-8): one frozen dataclass per
section, its defaults and docs. :class:`i2x.platform.config.Config` holds them beside the
data, plant, model and training sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ExplainConfig:
    """Steps 2-7 of the method. Every field is an OURS choice unless noted.

    Attributes:
        method: saliency method, a key of :data:`i2x.explanation.cam_methods.CAM_METHODS` (PAPER: gradcam).
        target_layer: dotted module name of the layer to explain; empty means the model's
            declared last conv block (the method's choice).
        target: ``label`` explains the true class, ``pred`` the predicted one.
        normalize: ``minmax`` (ReLU then min-max per map, as pytorch-grad-cam) or ``none``.
        pca_components: PCA size before K-Means.
        n_prototypes: K. PAPER: 32 for MNIST, 128 for CIFAR-10.
        fit_max_locations: K-Means/PCA fit on at most this many random locations.
        kmeans_n_init: K-Means restarts.
        n_exemplars: exemplar patches kept per prototype.
        min_cluster_size: HDBSCAN min cluster size; 0 means max(10, N/200).
        patterns_max_dim: PCA-reduce dY to this many dims before HDBSCAN when M is larger.
        ridge_lambda: the ridge penalty lambda.
        regression: ``centred`` fits beta on dP and dY centred within each group (an
            unpenalised intercept); ``origin`` is the paper's fit through the origin, kept
            for comparison (its held-out R^2 was negative on every data set tried: a group
            of dY clusters has a large common shift that no fit through 0 can represent).
        r2_folds: k of the k-fold held-out R^2.
        min_group_for_r2: groups smaller than this get no held-out R^2 (folds of a few
            samples say nothing). Held-out figures are pooled over groups.
        evidence_includes_noise: let HDBSCAN noise (group -1) contribute to evidence.
        shared_coverage: presence share that makes a prototype shared by a class.
        specialised_purity: share of a group's members that must be of class c.
        background_coverage / background_class_share: a prototype with at least this
            coverage in at least this share of the classes is background (blank canvas,
            borders): marked, and never a class's shared or specialised prototype.
        background_blank_std / background_blank_share: so is a prototype with at least this
            share of its cells near-constant (pixel std below ``background_blank_std``).
        background_ring_share: ... or with this share of its cells on the grid's outer ring,
            spread over three or more sides (a one-corner mark is not background).
        distinct_coverage / distinct_ratio: a prototype is distinct for class c when its
            coverage of c is at least ``distinct_coverage`` and ``distinct_ratio`` times its
            coverage of any other class (for the paper's "more distinct prototypes are
            resolved first").
        separation_ratio: a pair counts as separated once its confusion count stays
            at or below this fraction of its peak.
        min_peak_confusions: a pair's separation is reported in words only when its peak
            confusion count reaches this (4 confusions say nothing about an order).
        top_drivers: prototypes listed per pair separation.
        uncertain_threshold: u_k at or above which k is a candidate uncertain prototype (and
            a target of the paper recipe); stated only after the null and the causal check.
        oscillation_weight: ``runs`` weights each flip by the smaller of the two same-sign
            runs around it; ``min`` by the smaller of its two intervals; ``later`` by |d_t|
            (the earlier rules, kept for comparison; see the method note).
        null_permutations: replicates of the within-class permutation null that every
            shared, specialised and uncertain label must beat (0 turns the test off).
        null_max_permutations: the null doubles its replicates, up to this, while a label's
            verdict would change within 3 Monte Carlo errors of its p-value.
        null_alpha: Benjamini-Hochberg level at which a label beats the null.
        null_seed: the null's seed; -1 uses the run's seed. Another value checks that the
            stated findings do not move with the null's seed (``bench/null_seeds.py``).
        shortcut_off_object: a necessary and sufficient, concentrated cue is a shortcut check
            only where at least this share of the other classes' images are blank canvas (off
            the objects, as a mark in an empty corner; object parts sit where others have ink).
        shortcut_rigid: and only where it is a rigid copy: at least this share of one of its
            cells' pixels the same in 98% of its class's images where it sits there (``rigid``,
            :func:`i2x.explanation.prototypes.rigidity`; a pasted mark 1.0, MNIST digit parts up
            to 0.94). 0 turns the condition off (a mark that moves from image to image is not
            rigid, and is then no shortcut check).
        cue_coverage: a class-specific prototype (``distinct_ratio`` times more common in one
            class than in any other) in at least this share of that class's images is tested
            by the causal check as a ``cue``, labelled or not (a shortcut in 5% of a class).
        concentration_share: the report says where a verified prototype sits when at least
            this share of its class's images have it in one ninth (else quarter, else half)
            of the image.
        overlay_per_class: samples per class drawn in the saliency overlays.
        batch_size: images per saliency/feature batch; for saliency, the largest batch.
        memory_mb: memory budget of one saliency batch; the batch size is measured from
            the target layer's activations and the graph after it (0: use batch_size).
    """

    method: str = "gradcam"
    target_layer: str = ""
    target: str = "label"
    normalize: Literal["minmax", "none"] = "minmax"
    pca_components: int = 32
    n_prototypes: int = 32
    fit_max_locations: int = 200_000
    kmeans_n_init: int = 3
    n_exemplars: int = 8
    min_cluster_size: int = 0
    patterns_max_dim: int = 16
    ridge_lambda: float = 1.0
    regression: Literal["centred", "origin"] = "centred"
    r2_folds: int = 5
    min_group_for_r2: int = 30
    evidence_includes_noise: bool = True
    shared_coverage: float = 0.8
    specialised_purity: float = 0.5
    background_coverage: float = 0.8
    background_class_share: float = 0.8
    background_blank_std: float = 0.04
    background_blank_share: float = 0.8
    background_ring_share: float = 0.9
    distinct_coverage: float = 0.5
    distinct_ratio: float = 2.0
    separation_ratio: float = 0.25
    min_peak_confusions: int = 10
    top_drivers: int = 3
    uncertain_threshold: float = 0.15
    oscillation_weight: Literal["runs", "min", "later"] = "runs"
    null_permutations: int = 200
    null_max_permutations: int = 3200
    null_alpha: float = 0.05
    null_seed: int = -1
    concentration_share: float = 0.8
    cue_coverage: float = 0.05
    shortcut_off_object: float = 0.4
    shortcut_rigid: float = 0.95
    overlay_per_class: int = 2
    batch_size: int = 500
    memory_mb: int = 2048


@dataclass(frozen=True)
class FaithfulnessConfig:
    """The causal check of every named prototype (METHOD step 7b; OURS, the paper has none).

    Attributes:
        enabled: run the deletion check (and ROAD) in every explain run.
        fill: what occluded cells become: ``mean`` (the analysis set's mean colour) or
            ``blur`` (the image blurred, so only fine detail is removed).
        blur_sigma: Gaussian sigma in pixels of the ``blur`` fill.
        draws: random cell sets per image for the foreground-matched baseline (the verdict's).
        uniform_draws: random cell sets per image for the uniform baseline, which is
            reported beside the verdict and not judged.
        max_images: images per prototype: a seeded subsample of those that contain it when
            there are more (0: all). Sized so that the verdicts do not change: on CIFAR-10 at
            N = 10,000 (fast net) the verdicts on 300 images agreed with those on all of them
            (docs/benchmarks.md#explain-cost); at N = 2,000 a class holds about 200 images.
        min_images: fewer images than this: the prototype is "not tested", never verified.
        foreground_threshold: a cell is foreground when its pixels differ from the image's
            border colour by at least this much on average (pixels in [0, 1]).
        bootstrap: resamples for the CI of the mean excess effect.
        ci: level of that CI.
        alpha: Benjamini-Hochberg level of the one-sided Wilcoxon test across prototypes;
            verified = CI above 0 and adjusted p below alpha.
        road_images: images for pytorch-grad-cam's ROAD score (0: skip ROAD).
        road_percentiles: ROAD's removal percentiles.
        copies: scan the analysis images for rigid copies (the same pixels at one place in a
            share of one class's images) and paste-test them on the final model
            (:mod:`i2x.explanation.copies`); finds a mark that has no prototype of its own.
        copy_tolerance: how far (pixels in [0, 1]) a copy's pixels may stray (0.05: exact
            copies; a mark re-encoded as JPEG may need more).
        copy_min_images: a copy held by fewer of its class's images is not considered.
        copy_tests: candidates paste-tested, best first (each costs 3 x copy_recipients passes).
        copy_recipients: other classes' images each candidate is pasted into.
        copy_min_push: a copy is verified only where it turns at least this share more of the
            recipients into its class than the control does (and BH-corrected p below alpha),
            and where its class holds it more often than chance allows after the scan's
            selection (hypergeometric p corrected for the scan's (patch, class) tests, below alpha).
        copy_permutations: label shuffles of that correction (Westfall-Young min-P, exact because
            the scan picks its patches without the labels; its resolution is 1 / (this + 1));
            0: Bonferroni (times the tests), stricter where the tests are alike.
    """

    enabled: bool = True
    fill: Literal["mean", "blur"] = "mean"
    blur_sigma: float = 2.0
    draws: int = 4
    uniform_draws: int = 1
    max_images: int = 300
    min_images: int = 10
    foreground_threshold: float = 0.1
    bootstrap: int = 1000
    ci: float = 0.95
    alpha: float = 0.05
    road_images: int = 64
    road_percentiles: tuple[int, ...] = (20, 40, 60, 80)
    copies: bool = True
    copy_tolerance: float = 0.05
    copy_min_images: int = 10
    copy_tests: int = 30
    copy_recipients: int = 300
    copy_min_push: float = 0.05
    copy_permutations: int = 999


@dataclass(frozen=True)
class TuneConfig:
    """Step 8, generalised into an Optuna search (all OURS; PAPER: drop, alpha=1, every
    uncertain prototype, 1 epoch curated then 1 epoch full).

    Attributes:
        act_on: ``findings`` (OURS, default): repair what the report verified (its lead
            shortcut check) with the strategies of :mod:`i2x.repair`, against ERM, JTT, DFR
            (Kirichenko et al.'s recipe), DFR by class and the oracle; with no finding, tune
            says so and stops.
            ``candidates``: the paper's study of the uncertain prototypes (below).
        repair_strategies: the i2x strategies the repair study searches.
        repair_lr: the learning rate every repair strategy and baseline fine-tunes with.
        max_accuracy_loss: a repair trial is chosen only within this much of the final
            model's accuracy on the i2x held-out set and on the validation images without the
            finding (the best worst group among those; :func:`i2x.repair.choice.pick`).
        heldout_take_out: how the judging set that scores every repair trial takes the
            finding out of its class's images (:mod:`i2x.repair.heldout`): ``none`` (OURS,
            default: the cue is only pasted into the other classes' images), ``swap-out``,
            ``blur`` or ``mean``. refit_take_out: the same for the training images i2x-dfr
            refits its last layer on (``swap-out``).
        cue_margin: grid cells around the finding's own cells that every strategy and the
            judging set edit with them (OURS; 0: the cells alone). A finding's cells are its
            core; a cue that spans a cell border leaves the rest of itself beside them.
        refit_images: training images in i2x-dfr's refit set (a seeded, class-stratified
            subset of the fit split; 0: all of it). DFR on training data reads them with the
            features frozen (Kirichenko et al.'s DFR_Tr).
        dfr_draws: group-balanced fits whose coefficients every DFR variant averages
            (Kirichenko et al.: 20; :mod:`i2x.repair.lastlayer`).
        n_trials: total trials of the study (COMPLETE + PRUNED), over all workers.
        storage: Optuna storage URL; empty means ``sqlite:///mlruns/optuna.db``. A
            PostgreSQL URL or ``journal:<path>`` (several processes on one host) work too.
        study_name: empty means ``i2x-<explain run id>``.
        kinds: perturbation kinds searched (keys of :data:`i2x.tuning.perturbation.PERTURBATIONS`).
        target_modes: searched: ``prototypes`` targets the n most uncertain prototypes;
            ``pair`` only those whose pair is the focal pair (acts on its images alone).
        max_targets: upper bound of n, the number of most uncertain prototypes targeted.
        threshold_min / threshold_max: range of the uncertainty threshold searched; the
            upper end is capped at the largest observed u_k, so every trial has a target.
        lr_min / lr_max: fine-tuning learning rate range (log scale).
        epochs_choices: epochs per phase searched.
        epoch_samples: images per fine-tuning epoch of the tuned strategy and its controls
            (a seeded subset of the fit split; 0 = whole epochs). Trades fidelity for time on
            a CPU; the summary prints the fraction of an epoch used.
        paper_whole_epochs: the paper recipe and its full->full control run whole epochs
            whatever ``epoch_samples`` says (the paper fine-tunes whole epochs).
        curation: ``pair`` (OURS) affects only the images of a target's pair classes that
            contain it; ``literal`` every image that contains it (the paper's wording, which
            deleted whole classes on MNIST).
        max_class_drop: a drop never removes more than this share of a class; where it binds,
            the images where the targets cover fewest cells are kept.
        upweight_max: the repeat factor of ``upweight`` at alpha = 1.
        match_tolerance: random-target prototypes affect within this relative difference of
            the targets' number of images.
        second_objective: add the focal pair's validation confusions as a second objective
            (a Pareto front in the dashboard; Optuna cannot prune multi-objective trials).
        seeds: seeds per strategy in the final evaluation.
        ci: level of the paired-difference CIs behind each verdict.
        heartbeat_s: RDB-storage heartbeat; stale trials are failed and retried.
        startup_trials: trials before the median pruner starts pruning.
        paper_lr: learning rate of the ``paper`` strategy; 0 uses the tuned trial's
            (the paper does not give one).
        artifact_store: ``s3://<bucket>`` to attach the summary and figures to the study
            through Optuna's Boto3ArtifactStore (shown in optuna-dashboard); the endpoint
            is ``$MLFLOW_S3_ENDPOINT_URL``. Empty: no Optuna artifacts.
    """

    act_on: Literal["findings", "candidates"] = "findings"
    repair_strategies: tuple[str, ...] = ("i2x-augment", "i2x-groups", "i2x-dfr")
    repair_lr: float = 0.01
    max_accuracy_loss: float = 0.01
    heldout_take_out: Literal["none", "swap-out", "blur", "mean"] = "none"
    refit_take_out: Literal["none", "swap-out", "blur", "mean"] = "swap-out"
    cue_margin: int = 1
    refit_images: int = 10_000
    dfr_draws: int = 20
    n_trials: int = 8
    storage: str = ""
    study_name: str = ""
    kinds: tuple[str, ...] = ("drop", "upweight", "mask", "blur", "noise")
    target_modes: tuple[Literal["prototypes", "pair"], ...] = ("prototypes", "pair")
    max_targets: int = 8
    threshold_min: float = 0.1
    threshold_max: float = 0.6
    lr_min: float = 1e-4
    lr_max: float = 0.03
    epochs_choices: tuple[int, ...] = (1, 2)
    epoch_samples: int = 0
    paper_whole_epochs: bool = True
    curation: Literal["pair", "literal"] = "pair"
    max_class_drop: float = 0.5
    upweight_max: float = 4.0
    match_tolerance: float = 0.2
    second_objective: bool = True
    seeds: int = 3
    ci: float = 0.95
    heartbeat_s: int = 30
    startup_trials: int = 3
    paper_lr: float = 0.0
    artifact_store: str = ""
