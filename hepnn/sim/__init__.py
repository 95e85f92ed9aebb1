"""Simulated samples: Pythia 8 + FastJet jets through a parametric detector."""
