"""Acting on what the explanation verified (``tune.act_on: findings``): repair the report's lead
shortcut check, reading no group label, and measure the repair against the published baselines.

- :mod:`~i2x.repair.finding`: what a repair acts on (the lead check, as its pixels);
- :mod:`~i2x.repair.context`: what every trial reads (:class:`~i2x.repair.context.RepairContext`);
- :mod:`~i2x.repair.heldout`: the sets i2x builds from the finding's cells: the judging set that
  chooses, the refit set i2x-dfr retrains on;
- :mod:`~i2x.repair.edits`, :mod:`~i2x.repair.finetune`, :mod:`~i2x.repair.lastlayer`: the
  counterfactual edit and the group weights, fine-tuning at the repair's budget, and DFR's
  last-layer recipe;
- :mod:`~i2x.repair.strategies`: every strategy and baseline as one call;
- :mod:`~i2x.repair.baselines`: ERM, JTT, DFR, DFR by class, the oracle, and the truth only
  they may read;
- :mod:`~i2x.repair.choice`: the Optuna study's space and objective, do-no-harm, the choice;
- :mod:`~i2x.repair.evaluation`: every row over seeds on the test set, and the matched control;
- :mod:`~i2x.repair.summary`: the table, the verdicts and the goal.

The paper's own study of uncertain prototypes (``tune.act_on: candidates``) is :mod:`i2x.tuning`.
"""
