"""Step 8 of the method: an explanation in, a fine-tuned model and its verdicts out.

Takes the final checkpoint and the explanation's targets; gives an Optuna study of targeted
perturbation and fine-tuning, and each strategy's verdict against matched controls (paired
over seeds, with a CI).

- :mod:`~i2x.tuning.perturbation`: the ``PERTURBATIONS`` registry (drop, upweight, mask, blur,
  noise) and which samples a target affects;
- :mod:`~i2x.tuning.finetune`: fine-tuning under a plan;
- :mod:`~i2x.tuning.study`: the Optuna study (objectives, pruning, heartbeat, artifacts), and
  :mod:`~i2x.tuning.trial_log`: what it prints per trial;
- :mod:`~i2x.tuning.comparison`: controls (full->full, random-target, the paper's 1+1) and
  the verdicts.
"""
