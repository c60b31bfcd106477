"""What people look at: the explanation and the study as figures and one offline HTML page.

Takes an explanation document with its arrays, or a tune summary; gives PNG figures and
``report/index.html``. Drawing only: nothing here computes a claim.

- :mod:`~i2x.reporting.figures`: the explanation's figures (prototypes, saliency over
  training, progression, betas, findings, galleries);
- :mod:`~i2x.reporting.run_figures`: training curves, strategies, Optuna figures;
- :mod:`~i2x.reporting.html`: the report page.
"""
