"""LightningDataModule over ROOT files described by a declarative data config.

``prepare_data`` generates the embedded sample if the config says how and no file is there
yet; ``setup`` checks every file (tree, branches) before any training starts and plans the
chunks of the train/val/test splits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from hepnn.data.dataset import ChunkedRootDataset
from hepnn.data.source import DataInputError, InputFile, inspect_files, plan_chunks, resolve_files
from hepnn.data.spec import DataSpec

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class RootDataModule(L.LightningDataModule):
    """Train/val/test batches from ROOT TTrees.

    ``files`` is a path, glob or list of them; ``generate`` (optional) is a
    :class:`hepnn.sim.sample.SampleConfig` mapping used to create the files when none exist.
    The remaining keys form the :class:`~hepnn.data.spec.DataSpec` (tree, variables, inputs,
    labels, observers, selection, split).
    """

    def __init__(
        self,
        files: str | Sequence[str],
        tree: str,
        inputs: Mapping,
        labels: Mapping,
        variables: Mapping | None = None,
        observers: Sequence[str] = (),
        selection: str | None = None,
        split: Mapping | None = None,
        batch_size: int = 512,
        eval_batch_size: int | None = None,
        chunk_size: int = 2048,
        buffer_size: int = 8192,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        generate: Mapping | None = None,
        progress_bar: bool = True,
    ):
        super().__init__()
        self.files_config = files
        self.spec = DataSpec.from_config(
            {
                "tree": tree,
                "inputs": inputs,
                "labels": labels,
                "variables": variables,
                "observers": observers,
                "selection": selection,
                "split": split,
            }
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.chunk_size = chunk_size
        self.buffer_size = buffer_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.generate = dict(generate) if generate else None
        self.progress_bar = progress_bar
        self._sample_checked = False
        self.files: list[InputFile] = []
        self.datasets: dict[str, ChunkedRootDataset] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    def _reads_generated_sample(self, output_dir: str) -> bool:
        """Whether every ``files`` pattern points into the generator's output directory."""
        patterns = [self.files_config] if isinstance(self.files_config, str) else list(self.files_config)
        target = Path(output_dir).expanduser().resolve()
        return all(Path(str(p)).expanduser().resolve().parent == target for p in patterns)

    def prepare_data(self) -> None:
        """Complete the embedded sample if ``files`` reads the output of the ``generate`` section.

        Shards already on disk are reused (after checking that they were made with the same
        configuration) and missing ones are generated, so an interrupted generation resumes.
        """
        if self.generate is None or self._sample_checked:
            return
        from hepnn.sim.sample import SampleConfig, generate_sample

        sample = SampleConfig.from_dict(self.generate)
        if not self._reads_generated_sample(sample.output_dir):
            return
        report = generate_sample(sample, progress_bar=self.progress_bar)
        self._sample_checked = True  # fit and test both call prepare_data: check the sample once
        log.info("data.files=%s: %s", self.files_config, report.summary())

    def setup(self, stage: str | None = None) -> None:
        """Check all input files and plan the chunks of every split (before any training starts)."""
        if self.datasets:
            return
        paths = resolve_files(self.files_config)
        self.files = inspect_files(paths, self.spec)
        for split in SPLITS:
            chunks = plan_chunks(self.files, self.spec, split, self.chunk_size)
            self.datasets[split] = ChunkedRootDataset(
                self.spec,
                chunks,
                self.batch_size if split == "train" else self.eval_batch_size,
                shuffle=split == "train",
                seed=self.seed,
                buffer_size=self.buffer_size,
                num_workers=self.num_workers,
            )
        sizes = {s: d.n_entries for s, d in self.datasets.items()}
        log.info("input: %d file(s), tree '%s', entries per split %s", len(self.files), self.spec.tree, sizes)
        for split in ("train", "test"):
            if sizes[split] == 0:
                raise DataInputError(
                    f"the {split} split of data.files={self.files_config} is empty "
                    f"(data.split={self.spec.split})"
                )

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
            prefetch_factor=2 if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        # Lightning sets epochs only on samplers; an iterable dataset learns it here. The trainer
        # config reloads dataloaders every epoch, so each epoch gets its own chunk order.
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.datasets["train"].set_epoch(trainer.current_epoch)
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def source_files(self) -> list[str]:
        """Input file paths, indexed by the ``file_index`` carried in every batch."""
        return [f.path for f in self.files]
