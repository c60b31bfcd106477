"""The settings of the method's analysis and tuning steps (2-8): one frozen dataclass per
section, its defaults and docs. :class:`i2x.platform.config.Config` holds them beside the
data, plant, model and training sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from i2x.platform.settings import Check, setting


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
            rigid, and is then no shortcut check unless it passes ``shortcut_consistent``).
        shortcut_consistent: or where it has one shape: patches around its cell in its class's
            images correlate at least this much at their best shift of up to one cell, whatever
            their brightness (``consistent``, :func:`i2x.explanation.consistency.shape_consistency`;
            off by default (1): on planted MNIST a 3x3 mark, smaller than a cell and so never a
            rigid copy by the measure above, scored 0.82-0.87 and digit parts up to 0.87, so no
            level separates them (bench/cue_grid.py); at 0.8 it states small marks and some
            digit parts, to read as candidates. Below 1 turns the route on.
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
    target: Literal["label", "pred"] = "label"
    normalize: Literal["minmax", "none"] = "minmax"
    pca_components: int = setting(32, lo=1, hi=4096)
    n_prototypes: int = setting(32, lo=2, hi=100_000)
    fit_max_locations: int = setting(200_000, lo=2, hi=100_000_000)
    kmeans_n_init: int = setting(3, lo=1, hi=1000)
    n_exemplars: int = setting(8, lo=1, hi=1000)
    min_cluster_size: int = setting(0, lo=2, hi=1_000_000, zero=True)
    patterns_max_dim: int = setting(16, lo=1, hi=4096)
    ridge_lambda: float = setting(1.0, above=0, hi=1e9)
    regression: Literal["centred", "origin"] = "centred"
    r2_folds: int = setting(5, lo=2, hi=100)
    min_group_for_r2: int = setting(30, lo=2, hi=1_000_000)
    evidence_includes_noise: bool = True
    shared_coverage: float = setting(0.8, above=0, hi=1)
    specialised_purity: float = setting(0.5, above=0, hi=1)
    background_coverage: float = setting(0.8, lo=0, hi=1)
    background_class_share: float = setting(0.8, lo=0, hi=1)
    background_blank_std: float = setting(0.04, lo=0, hi=1)
    background_blank_share: float = setting(0.8, lo=0, hi=1)
    background_ring_share: float = setting(0.9, lo=0, hi=1)
    distinct_coverage: float = setting(0.5, lo=0, hi=1)
    distinct_ratio: float = setting(2.0, lo=1, hi=1e6)
    separation_ratio: float = setting(0.25, lo=0, hi=1)
    min_peak_confusions: int = setting(10, lo=0, hi=1_000_000)
    top_drivers: int = setting(3, lo=0, hi=1000)
    uncertain_threshold: float = setting(0.15, lo=0, hi=1)
    oscillation_weight: Literal["runs", "min", "later"] = "runs"
    null_permutations: int = setting(200, lo=0, hi=1_000_000)
    null_max_permutations: int = setting(3200, lo=0, hi=1_000_000)
    null_alpha: float = setting(0.05, above=0, below=1)
    null_seed: int = setting(-1, lo=-1, hi=2**32 - 1)
    concentration_share: float = setting(0.8, lo=0, hi=1)
    cue_coverage: float = setting(0.05, lo=0, hi=1)
    shortcut_off_object: float = setting(0.4, lo=0, hi=1)
    shortcut_rigid: float = setting(0.95, lo=0, hi=1)
    shortcut_consistent: float = setting(1.0, lo=0, hi=1)
    overlay_per_class: int = setting(2, lo=0, hi=100)
    batch_size: int = setting(500, lo=1, hi=1_000_000)
    memory_mb: int = setting(2048, lo=0, hi=10_000_000)

    CHECKS: ClassVar[tuple[Check, ...]] = (
        Check(("null_permutations", "null_max_permutations"), lambda e: e.null_max_permutations >= e.null_permutations,
              "explain.null_max_permutations must be at least explain.null_permutations"),
        Check(("n_prototypes", "fit_max_locations"), lambda e: e.fit_max_locations >= e.n_prototypes,
              "explain.fit_max_locations must be at least explain.n_prototypes (K-Means needs a location per centre)"),
        Check(("r2_folds", "min_group_for_r2"), lambda e: e.min_group_for_r2 >= e.r2_folds,
              "explain.min_group_for_r2 must be at least explain.r2_folds"),
    )


@dataclass(frozen=True)
class FaithfulnessConfig:
    """The causal check of every named prototype (METHOD step 7b; OURS, the paper has none).

    Attributes:
        enabled: run the deletion check (and ROAD) in every explain run.
        fills: what occluded cells become, each way in turn; a prototype is verified only
            under every one (OURS; ROAD, Rong et al.: one constant fill can leak class
            information): ``mean`` (the analysis set's mean colour), ``background`` (the
            image's border colour: on blank canvas, erasing), ``blur`` (the image blurred) or
            ``road`` (pytorch-grad-cam's noisy linear imputation; slower).
        blur_sigma: Gaussian sigma in pixels of the ``blur`` fill.
        draws: random cell sets per image for the foreground-matched baseline (the verdict's).
        uniform_draws: random cell sets per image for the uniform baseline, which is
            reported beside the verdict and not judged.
        max_images: images per prototype: a seeded subsample of those that contain it when
            there are more (0: all). Sized so that the verdicts do not change: on CIFAR-10 at
            N = 10,000 (fast net) the verdicts on 300 images agreed with those on all of them
            (docs/history.md#explain-cost); at N = 2,000 a class holds about 200 images.
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
    fills: tuple[Literal["mean", "background", "blur", "road"], ...] = setting(("mean", "background"), nonempty=True)
    blur_sigma: float = setting(2.0, above=0, hi=100)
    draws: int = setting(4, lo=1, hi=1000)
    uniform_draws: int = setting(1, lo=1, hi=1000)
    max_images: int = setting(300, lo=0, hi=10_000_000)
    min_images: int = setting(10, lo=2, hi=1_000_000)
    foreground_threshold: float = setting(0.1, lo=0, hi=1)
    bootstrap: int = setting(1000, lo=10, hi=1_000_000)
    ci: float = setting(0.95, above=0, below=1)
    alpha: float = setting(0.05, above=0, below=1)
    road_images: int = setting(64, lo=0, hi=100_000)
    road_percentiles: tuple[int, ...] = setting((20, 40, 60, 80), lo=1, hi=99, nonempty=True)
    copies: bool = True
    copy_tolerance: float = setting(0.05, lo=0, hi=1)
    copy_min_images: int = setting(10, lo=2, hi=1_000_000)
    copy_tests: int = setting(30, lo=0, hi=10_000)
    copy_recipients: int = setting(300, lo=1, hi=1_000_000)
    copy_min_push: float = setting(0.05, lo=0, hi=1)
    copy_permutations: int = setting(999, lo=0, hi=1_000_000)

    CHECKS: ClassVar[tuple[Check, ...]] = (
        Check(("min_images", "max_images"), lambda f: f.max_images == 0 or f.max_images >= f.min_images,
              "faithfulness.max_images must be 0 (all) or at least faithfulness.min_images"),
    )


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
            ``P<k>`` (``P12``): repair prototype k as the finding, for its class in the report's
            "worth a look" list or its class-specific causal check (a shortcut the report did not
            state; the user's call).
        repair_strategies: the i2x strategies the repair study searches.
        repair_lr: the learning rate every repair strategy and baseline fine-tunes with.
        max_accuracy_loss: a repair trial is chosen only within this much of the final
            model's accuracy on the i2x held-out set and on the validation images without the
            finding (the best worst group among those; :func:`i2x.repair.choice.pick`).
        heldout_take_out: how the judging set that scores every repair trial takes the
            finding out of its class's images (:mod:`i2x.repair.heldout`): ``swap-out`` (OURS,
            default: the finding's cells replaced by those of a class image without it, so the
            judging set asks whether the class is still known without the cue), ``none`` (the cue
            only pasted into the other classes' images), ``blur`` or ``mean``.
        refit_take_out: the same for the training images i2x-dfr refits its last layer on
            (``swap-out``).
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

    act_on: str = "findings"
    repair_strategies: tuple[str, ...] = setting(("i2x-augment", "i2x-groups", "i2x-dfr"), nonempty=True)
    repair_lr: float = setting(0.01, above=0, hi=1e6)
    max_accuracy_loss: float = setting(0.01, lo=0, hi=1)
    heldout_take_out: Literal["none", "swap-out", "blur", "mean"] = "swap-out"
    refit_take_out: Literal["none", "swap-out", "blur", "mean"] = "swap-out"
    cue_margin: int = setting(1, lo=0, hi=8)
    refit_images: int = setting(10_000, lo=100, hi=10_000_000, zero=True)
    dfr_draws: int = setting(20, lo=1, hi=1000)
    n_trials: int = setting(8, lo=1, hi=100_000)
    storage: str = ""
    study_name: str = ""
    kinds: tuple[str, ...] = setting(("drop", "upweight", "mask", "blur", "noise"), nonempty=True)
    target_modes: tuple[Literal["prototypes", "pair"], ...] = setting(("prototypes", "pair"), nonempty=True)
    max_targets: int = setting(8, lo=1, hi=100_000)
    threshold_min: float = setting(0.1, lo=0, hi=1)
    threshold_max: float = setting(0.6, lo=0, hi=1)
    lr_min: float = setting(1e-4, above=0, hi=1e6)
    lr_max: float = setting(0.03, above=0, hi=1e6)
    epochs_choices: tuple[int, ...] = setting((1, 2), lo=1, hi=1000, nonempty=True)
    epoch_samples: int = setting(0, lo=0, hi=100_000_000)
    paper_whole_epochs: bool = True
    curation: Literal["pair", "literal"] = "pair"
    max_class_drop: float = setting(0.5, lo=0, hi=1)
    upweight_max: float = setting(4.0, lo=1, hi=1e6)
    match_tolerance: float = setting(0.2, lo=0, hi=10)
    second_objective: bool = True
    seeds: int = setting(3, lo=1, hi=1000)
    ci: float = setting(0.95, above=0, below=1)
    heartbeat_s: int = setting(30, lo=1, hi=86_400)
    startup_trials: int = setting(3, lo=0, hi=100_000)
    paper_lr: float = setting(0.0, lo=0, hi=1e6)
    artifact_store: str = ""

    CHECKS: ClassVar[tuple[Check, ...]] = (
        Check(("act_on",), lambda t: t.act_on in ("findings", "candidates") or (t.act_on[:1] == "P" and t.act_on[1:].isdigit()),
              "tune.act_on must be findings, candidates or P<k> (a prototype of the report, e.g. P12)"),
        Check(("threshold_min", "threshold_max"), lambda t: t.threshold_min < t.threshold_max,
              "tune.threshold_min must be below tune.threshold_max"),
        Check(("lr_min", "lr_max"), lambda t: t.lr_min <= t.lr_max, "tune.lr_min must be at most tune.lr_max"),
    )
