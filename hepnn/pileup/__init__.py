"""Pile-up mitigation on jets of samples with pile-up (``generate=toptag_pu``, ``qcd_pu``).

- :mod:`hepnn.pileup.rules`: the rule-based corrections (charged-hadron subtraction, area
  subtraction, SoftKiller), the baselines of the learned ones.
"""
