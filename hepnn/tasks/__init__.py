"""LightningModules: what is learned (loss, metrics, predictions), independent of the net."""
