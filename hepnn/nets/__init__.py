"""Plain ``torch.nn.Module`` networks; they know nothing of Lightning or Hydra."""
