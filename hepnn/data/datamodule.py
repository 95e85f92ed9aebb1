"""LightningDataModule over ROOT files described by a declarative data config.

``prepare_data`` generates the embedded sample if the config says how and no file is there
yet, and computes (and caches) automatic standardisation once per node; ``setup`` checks every
file (tree, branches) before any training starts, counts the entries the selection keeps, and
plans the chunks of the train/val/test splits. ``state_dict`` stores the resolved data spec
(standardisation included) in checkpoints as plain data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L

from hepnn.data.cache import ChunkCache, cache_directory
from hepnn.data.columns import read_entry_columns
from hepnn.data.dataset import ChunkedRootDataset
from hepnn.data.loading.loader import BatchLoader
from hepnn.data.loading.memory import keep_freed_memory
from hepnn.data.source import (
    DataInputError,
    InputFile,
    count_selected,
    inspect_files,
    plan_chunks,
    resolve_files,
)
from hepnn.data.spec import DataConfigError, DataSpec
from hepnn.data.standardize import resolve_standardization
from hepnn.data.training_weights import resolve_reweighting

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class RootDataModule(L.LightningDataModule):
    """Train/val/test batches from ROOT TTrees or RNTuples.

    ``files`` is a path, glob, URL or list of them (split into train/val/test by entry ranges of
    every file, ``split``), or a mapping ``{train: ..., val: ..., test: ...}`` of per-split
    files. ``generate`` (optional) is a sample configuration mapping (jets or air showers,
    :mod:`hepnn.sim.kinds`) used to create the files when none exist. ``tree`` to
    ``nonfinite_value`` form the :class:`~hepnn.data.spec.DataSpec`. ``cache`` (null, memory,
    disk) keeps preprocessed chunks for later epochs; ``cache_dir`` also holds automatic
    standardisation. ``on_bad_file`` (error, skip) says what an unreadable input file does. With
    ``keep_freed_memory`` this process keeps the memory it frees for its next batches and steps
    (:mod:`hepnn.data.loading.memory`).
    """

    def __init__(
        self,
        files: str | Sequence[str] | Mapping,
        tree: str,
        inputs: Mapping,
        labels: Mapping | None = None,
        variables: Mapping | None = None,
        targets: Mapping | None = None,
        weights: str | None = None,
        reweight: Mapping | None = None,
        observers: Sequence[str] = (),
        baseline: Sequence[str] | None = None,
        image_targets: Sequence[str] | None = None,
        element_targets: Sequence[str] | None = None,
        object_targets: Sequence[str] | None = None,
        selection: str | None = None,
        split: Mapping | None = None,
        standardize: Mapping | None = None,
        nonfinite: str = "error",
        nonfinite_value: float = 0.0,
        batch_size: int = 512,
        eval_batch_size: int | None = None,
        chunk_size: int = 10_000,
        buffer_size: int = 8192,
        read_ahead: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        generate: Mapping | None = None,
        progress_bar: bool = True,
        cache: str | None = None,
        cache_dir: str | None = None,
        on_bad_file: str = "error",
        keep_freed_memory: bool = True,
    ):
        super().__init__()
        self.files_config = files
        self.spec = DataSpec.from_config(
            {
                "tree": tree,
                "variables": variables,
                "inputs": inputs,
                "labels": labels,
                "targets": targets,
                "weights": weights,
                "reweight": reweight,
                "observers": observers,
                "baseline": baseline,
                "image_targets": image_targets,
                "element_targets": element_targets,
                "object_targets": object_targets,
                "selection": selection,
                "split": split,
                "standardize": standardize,
                "nonfinite": nonfinite,
                "nonfinite_value": nonfinite_value,
            }
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.chunk_size = chunk_size
        self.buffer_size = buffer_size
        self.read_ahead = read_ahead
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.generate = dict(generate) if generate else None
        self.progress_bar = progress_bar
        self.cache_dir = cache_dir
        self.on_bad_file = on_bad_file
        self.keep_freed_memory = keep_freed_memory
        self.chunk_cache_dir = None
        self._cache_mode = cache
        cache_directory(cache, cache_dir, self.spec)  # check the setting early
        self._sample_checked = False
        self._restored_spec: DataSpec | None = None
        # (epoch, batches) already trained in that epoch by the checkpoint this run resumes from
        self._resume_progress: tuple[int, int] | None = None
        self.files: list[InputFile] = []
        self.skipped_files: list[str] = []
        self.split_files: dict[str, list[InputFile]] = {}
        self.datasets: dict[str, ChunkedRootDataset] = {}
        self._loaders: dict[str, BatchLoader] = {}  # by split, for the dataset they were made for
        self.reweight_figures: dict[str, float] = {}  # effective training entries per class

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def per_split_files(self) -> bool:
        return isinstance(self.files_config, Mapping)

    def _patterns(self) -> list[str]:
        if self.per_split_files:
            return [str(p) for v in self.files_config.values() for p in ([v] if isinstance(v, str) else v)]
        return (
            [self.files_config] if isinstance(self.files_config, str) else [str(p) for p in self.files_config]
        )

    def _reads_generated_sample(self, output_dir: str) -> bool:
        """Whether every ``files`` pattern points into the generator's output directory."""
        target = Path(output_dir).expanduser().resolve()
        return all(Path(p).expanduser().resolve().parent == target for p in self._patterns())

    def prepare_data(self) -> None:
        """Complete the embedded sample if ``files`` reads the output of the ``generate`` section,
        and compute the automatic standardisation (cached in ``cache_dir``) once per node.

        Shards already on disk are reused (after checking that they were made with the same
        configuration) and missing ones are generated, so an interrupted generation resumes.
        """
        if self._sample_checked:
            return
        if self.generate is not None:
            from hepnn.sim.kinds import build_sample

            sample, generate = build_sample(self.generate)
            if self._reads_generated_sample(sample.output_dir):
                report = generate(sample, progress_bar=self.progress_bar)
                log.info("data.files=%s: %s", self.files_config, report.summary())
        self._sample_checked = True  # fit and test both call prepare_data: do this once
        if self.spec.automatic_features and self.cache_dir:
            self._inspect()
            self._standardize()

    def _inspect(self) -> None:
        """Resolve the file patterns of every split and check each distinct file once."""
        if self.files:
            return
        if self.per_split_files:
            unknown = set(self.files_config) - set(SPLITS)
            if unknown or "train" not in self.files_config:
                raise DataConfigError(
                    f"data.files as a mapping needs per-split keys train (required), val, test; "
                    f"got {sorted(self.files_config)}"
                )
            patterns = {s: self.files_config.get(s) for s in SPLITS}
            paths = {s: resolve_files(p, f"data.files.{s}") if p else [] for s, p in patterns.items()}
        else:
            everything = resolve_files(self.files_config)
            paths = dict.fromkeys(SPLITS, everything)
        unique = list(dict.fromkeys(p for s in SPLITS for p in paths[s]))
        self.files, self.skipped_files = inspect_files(unique, self.spec, self.on_bad_file)
        if not self.files:
            raise DataInputError(f"no readable input file in data.files={self.files_config}")
        by_path = {f.path: f for f in self.files}
        self.split_files = {s: [by_path[p] for p in paths[s] if p in by_path] for s in SPLITS}

    def _standardize(self) -> None:
        if self._restored_spec is not None:
            self.spec = self._restored_spec
            return
        self.spec, origin = resolve_standardization(
            self.split_files["train"], self.spec, self.cache_dir, whole_files=self.per_split_files
        )
        if origin != "config":
            log.info("automatic standardisation: %s", origin)

    def setup(self, stage: str | None = None) -> None:
        """Check all input files, resolve standardisation, count selected entries and plan every split.

        Fitting (``stage`` ``fit`` or None) needs non-empty train and test splits; testing or
        predicting only (``test``, ``predict``: e.g. ``hepnn.evaluate`` with ``split`` all test)
        needs a non-empty test split.
        """
        if self.datasets:
            return
        if self.keep_freed_memory:
            keep_freed_memory()
        needed = ("train", "test") if stage in (None, "fit") else ("test",)
        self._inspect()
        self._standardize()
        plans = {
            split: plan_chunks(
                self.split_files[split], self.spec, None if self.per_split_files else split, self.chunk_size
            )
            for split in SPLITS
        }
        if self.spec.reweight is not None and (self.spec.reweight_table is None or plans["train"]):
            self.spec, self.reweight_figures = resolve_reweighting(self.spec, plans["train"], self.cache_dir)
        self.chunk_cache_dir = cache_directory(self._cache_mode, self.cache_dir, self.spec)
        for split in SPLITS:
            chunks = plans[split]
            counts = count_selected(chunks, self.spec)
            self.datasets[split] = ChunkedRootDataset(
                self.spec,
                chunks,
                self.batch_size if split == "train" else self.eval_batch_size,
                shuffle=split == "train",
                augment=split == "train",
                seed=self.seed,
                buffer_size=self.buffer_size,
                read_ahead=self.read_ahead,
                num_workers=self.num_workers,
                counts=counts,
                cache_dir=self.chunk_cache_dir,
            )
            raw = sum(c.n_entries for c in chunks)
            if raw and not sum(counts) and split in needed:
                raise DataInputError(
                    f"data.selection {self.spec.selection.text!r} keeps none of the {raw} entries of the "
                    f"{split} split ({len(self.split_files[split])} file(s) of "
                    f"data.files={self.files_config})"
                )
        sizes = {s: d.n_entries for s, d in self.datasets.items()}
        log.info("input: %d file(s), tree '%s', entries per split %s", len(self.files), self.spec.tree, sizes)
        for split in needed:
            if sizes[split] == 0:
                raise DataInputError(
                    f"the {split} split of data.files={self.files_config} is empty "
                    f"(data.split={self.spec.split})"
                )

    def state_dict(self) -> dict:
        """Plain data stored in checkpoints: the resolved data spec (standardisation included) and,
        during training, how many batches of which epoch were trained when the checkpoint was saved."""
        state = {"spec": self.spec.to_config(), "skipped_files": list(self.skipped_files)}
        progress = training_progress(getattr(self, "trainer", None))
        if progress is not None:
            state["training_progress"] = {"epoch": progress[0], "batches": progress[1]}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Use the checkpoint's spec (its standardisation) instead of recomputing it."""
        progress = state.get("training_progress")
        self._resume_progress = (progress["epoch"], progress["batches"]) if progress else None
        restored = DataSpec.from_config(state["spec"])
        if restored.standardization() != self.spec.standardization() and not self.spec.automatic_features:
            log.warning("the checkpoint's standardisation differs from data.inputs; using the checkpoint's")
        self._restored_spec = restored
        self.spec = restored
        if self.datasets:
            self.chunk_cache_dir = cache_directory(self._cache_mode, self.cache_dir, restored)
        for dataset in self.datasets.values():
            dataset.spec = restored
            dataset.cache = ChunkCache(self.chunk_cache_dir) if self.chunk_cache_dir else None

    def training_columns(self, names: Sequence[str], key: str = "data.baseline") -> dict:
        """The variables ``names`` and the class ``label`` of every selected training entry, one array
        each (for the cut-based baseline and the reweighting, which are filled on the training split).

        Errors name ``<key>.<name>`` (e.g. a variable that is not one value per entry).
        """
        if not self.datasets:
            self.setup("fit")
        chunks = self.datasets["train"].chunks
        return read_entry_columns(
            self.spec, chunks, list(names), keys=[f"{key}.{name}" for name in names], labels=True
        )

    def summary(self) -> dict:
        """Figures about the input for the run summary."""
        return {
            "data/files": len(self.files),
            "data/skipped_files": len(self.skipped_files),
            **{f"data/{s}_entries": d.n_entries for s, d in self.datasets.items()},
            **self.reweight_figures,
        }

    def _loader(self, split: str) -> BatchLoader:
        """A new loader of ``split``."""
        return BatchLoader(self.datasets[split], num_workers=self.num_workers, pin_memory=self.pin_memory)

    def _kept_loader(self, split: str) -> BatchLoader:
        """The loader of ``split``, the same object every time (for the same dataset): the trainer
        asks for loaders every epoch (see :meth:`train_dataloader`), and a loader kept keeps its
        worker processes running (``persistent_workers``) instead of starting new ones."""
        loader = self._loaders.get(split)
        if loader is None or loader.dataset is not self.datasets[split]:
            loader = self._loaders[split] = self._loader(split)
        return loader

    def train_dataloader(self) -> BatchLoader:
        # Lightning sets epochs only on samplers; an iterable dataset learns it here. The trainer
        # config reloads dataloaders every epoch, so each epoch gets its own chunk order; the loader
        # itself is kept, and passes the epoch on to its running workers.
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.datasets["train"].set_epoch(trainer.current_epoch, self._batches_already_trained(trainer))
        return self._kept_loader("train")

    def _batches_already_trained(self, trainer) -> int:
        """Batches of the current epoch trained before the checkpoint this fit resumed from.

        Non-zero only in the epoch a mid-epoch checkpoint (e.g. ``preempted.ckpt``) was saved in:
        the training dataset skips those batches and the epoch goes on with exactly the others.
        Used once: later epochs (and a resumed end-of-epoch checkpoint) skip nothing; a loader
        asked for before the trainer restored its epoch (still at an earlier one) keeps it.
        """
        progress = self._resume_progress
        if progress is None or trainer.current_epoch < progress[0]:
            return 0
        self._resume_progress = None
        return progress[1] if progress[0] == trainer.current_epoch else 0

    def val_dataloader(self) -> BatchLoader:
        return self._kept_loader("val")

    def test_dataloader(self) -> BatchLoader:
        return self._kept_loader("test")

    def predict_dataloader(self) -> BatchLoader:
        return self._loader("test")

    def source_files(self) -> list[str]:
        """Input file paths, indexed by the ``file_index`` carried in every batch."""
        return [f.path for f in self.files]


def training_progress(trainer) -> tuple[int, int] | None:
    """``(epoch, batches trained in it)`` while ``trainer`` fits; None otherwise."""
    if trainer is None or not trainer.training:
        return None
    return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
