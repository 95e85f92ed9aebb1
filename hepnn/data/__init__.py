"""From ROOT files to batches: spec, expressions, sources, preprocessing, datasets, datamodule."""
