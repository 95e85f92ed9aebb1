"""Figures of merit computed on numpy arrays of predictions, independent of Lightning.

- :mod:`hepnn.metrics.classification`: ROC, AUC, background rejection at fixed signal
  efficiency, one-vs-rest AUCs, confusion matrix;
- :mod:`hepnn.metrics.regression`: bias and 68 % resolution per target, energy, angular and core
  resolution of air showers.
"""
