"""Looking at results: reading run directories and predictions files back, drawing the plots.

- :mod:`hepnn.analysis.runs`: a run directory's predictions (read by the task that wrote them),
  summary and metrics CSV;
- :mod:`hepnn.analysis.plotting`: the figures (ROC, score distributions, confusion matrix,
  training curves, resolutions, jet images) as functions of numpy arrays;
- :mod:`hepnn.analysis.notebook_helpers`: what the notebooks in ``notebooks/`` call.
"""
