"""The production loader on files hepnn did not write: event-level collections, other schemas,
compression codecs, RNTuple, integer labels, targets, weights, ordering, automatic
standardisation and its cache, chunk caches, per-split files, and bad input."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.data import standardize
from hepnn.data.datamodule import RootDataModule
from hepnn.data.preprocess import ChunkData, DataValueError
from hepnn.data.sharding import batch_plan, batches_before, deal
from hepnn.data.source import DataInputError
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError

CODECS = {"zlib": uproot.ZLIB(4), "lzma": uproot.LZMA(2), "lz4": uproot.LZ4(1), "zstd": uproot.ZSTD(3)}
N_PER_FILE = 300


def make_events(seed: int, n: int = N_PER_FILE, nan_rate: float = 0.0) -> dict:
    """NanoAOD-like events: a jagged jet collection (some events without jets) and event quantities."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, n)
    pt = rng.exponential(40.0, counts.sum()).astype(np.float32) + 20
    eta = rng.normal(0, 1.5, counts.sum()).astype(np.float32)
    if nan_rate:
        eta[rng.random(len(eta)) < nan_rate] = np.nan
    return {
        "Jet_pt": ak.unflatten(pt, counts),
        "Jet_eta": ak.unflatten(eta, counts),
        "MET_pt": rng.exponential(50.0, n).astype(np.float32),
        "is_signal": rng.integers(0, 2, n).astype(np.int32),
        "genWeight": rng.normal(1.0, 0.1, n).astype(np.float32),
    }


def write_events(path, events: dict, compression=None, tree: str = "Events", basket: int = 100) -> None:
    """A TTree in the NanoAOD style: ``nJet`` counter with ``Jet_*`` branches (written in baskets)."""
    with uproot.recreate(path, compression=compression or uproot.ZLIB(1)) as f:
        jets = ak.zip({"pt": events["Jet_pt"], "eta": events["Jet_eta"]})
        flat = {k: v for k, v in events.items() if not k.startswith("Jet_")}
        f.mktree(tree, {"Jet": jets.type.content, **{k: v.dtype for k, v in flat.items()}})
        for start in range(0, len(events["MET_pt"]), basket):
            f[tree].extend(
                {
                    "Jet": jets[start : start + basket],
                    **{k: v[start : start + basket] for k, v in flat.items()},
                }
            )


@pytest.fixture(scope="module")
def event_files(tmp_path_factory):
    """Four files of 300 events, each with another compression codec."""
    out = tmp_path_factory.mktemp("events")
    for i, (name, codec) in enumerate(CODECS.items()):
        write_events(out / f"events_{i}_{name}.root", make_events(seed=i), codec)
    return out


def event_config(files, **overrides) -> dict:
    cfg = {
        "files": files,
        "tree": "Events",
        "variables": {"jet_logpt": "np.log(Jet_pt)"},
        "inputs": {
            "jets": {
                "length": 4,
                "pad_value": -9.0,
                "mask": "jet_mask",
                "order": {"by": "Jet_pt", "descending": True},
                "features": {"jet_logpt": {"center": 4.0, "scale": 0.5}, "Jet_eta": {"clip": [-2.0, 2.0]}},
            },
            "event": {"features": {"MET_pt": {"center": 50.0, "scale": 50.0}}},
        },
        "labels": {"index": "is_signal", "classes": ["background", "signal"]},
        "targets": {"met": "MET_pt"},
        "weights": "genWeight",
        "observers": ["MET_pt"],
        "split": {"train": 0.5, "val": 0.2, "test": 0.3},
        "batch_size": 64,
        "eval_batch_size": 64,
        "chunk_size": 100,
        "buffer_size": 128,
        "num_workers": 0,
        "seed": 3,
    }
    cfg.update(overrides)
    return cfg


def events_by_id(paths) -> dict:
    """(file index, entry) -> the event's values, read directly with uproot."""
    table = {}
    for index, path in enumerate(paths):
        arrays = uproot.open(path)["Events"].arrays()
        for entry in range(len(arrays)):
            table[(index, entry)] = arrays[entry]
    return table


def all_batches(dm: RootDataModule, split: str) -> list[dict]:
    return list(getattr(dm, f"{split}_dataloader")())


def test_foreign_schema_every_codec_values_and_exactly_once(event_files):
    dm = RootDataModule(**event_config(f"{event_files}/*.root"))
    dm.setup()
    events = events_by_id(dm.source_files())
    assert len(dm.source_files()) == 4  # one file per codec
    for split in ("train", "val", "test"):
        batches = all_batches(dm, split)
        ids = [(int(f), int(e)) for b in batches for f, e in zip(b["file_index"], b["entry"], strict=True)]
        assert len(ids) == len(set(ids)) == dm.datasets[split].n_entries
        for b in batches:
            assert b["jets"].shape[1:] == (2, 4) and b["event"].shape[1:] == (1,)
            for row, key in enumerate(zip(b["file_index"].tolist(), b["entry"].tolist(), strict=True)):
                event = events[key]
                pt = np.sort(np.asarray(event.Jet_pt))[::-1]
                eta = np.asarray(event.Jet_eta)[np.argsort(-np.asarray(event.Jet_pt), kind="stable")]
                n = min(len(pt), 4)
                assert b["jet_mask"][row].tolist() == [True] * n + [False] * (4 - n)
                np.testing.assert_allclose(b["jets"][row, 0, :n], (np.log(pt[:n]) - 4.0) / 0.5, rtol=1e-5)
                np.testing.assert_allclose(b["jets"][row, 1, :n], np.clip(eta[:n], -2, 2), rtol=1e-6)
                assert np.all(b["jets"][row, :, n:].numpy() == -9.0)
                assert b["label"][row] == event.is_signal
                assert b["weight"][row] == pytest.approx(event.genWeight)
                assert b["targets"][row, 0] == pytest.approx(event.MET_pt)
                assert b["event"][row, 0] == pytest.approx((event.MET_pt - 50) / 50)
                assert b["observers"]["MET_pt"][row] == pytest.approx(event.MET_pt)


def test_ascending_order_puts_the_leading_jet_last(event_files):
    cfg = event_config(f"{event_files}/events_0_zlib.root")
    cfg["inputs"]["jets"]["order"] = {"by": "Jet_pt", "descending": False}
    cfg["inputs"]["jets"]["features"] = {"Jet_pt": None}
    dm = RootDataModule(**cfg)
    dm.setup()
    events = events_by_id(dm.source_files())
    for b in all_batches(dm, "test"):
        for row, key in enumerate(zip(b["file_index"].tolist(), b["entry"].tolist(), strict=True)):
            pt = np.sort(np.asarray(events[key].Jet_pt))[::-1][:4]  # the 4 hardest jets are kept
            np.testing.assert_allclose(b["jets"][row, 0, : len(pt)], pt[::-1], rtol=1e-6)


def test_rntuple_reads_like_a_ttree(event_files, tmp_path):
    events = make_events(seed=0)
    with uproot.recreate(tmp_path / "events.root") as f:
        f["Events"] = {k: v for k, v in events.items()}
    assert uproot.open(tmp_path / "events.root").classnames()["Events;1"] == "ROOT::RNTuple"
    from_ttree = RootDataModule(**event_config(f"{event_files}/events_0_zlib.root"))
    from_rntuple = RootDataModule(**event_config(str(tmp_path / "events.root")))
    for dm in (from_ttree, from_rntuple):
        dm.setup()
    for a, b in zip(all_batches(from_ttree, "test"), all_batches(from_rntuple, "test"), strict=True):
        for key in ("jets", "jet_mask", "label", "entry", "weight"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_shuffling_changes_order_but_not_content(event_files):
    dm = RootDataModule(**event_config(f"{event_files}/*.root"))
    dm.setup()
    epochs = []
    for epoch in range(2):
        dm.datasets["train"].set_epoch(epoch)
        rows = {}
        for b in all_batches(dm, "train"):
            for row, key in enumerate(zip(b["file_index"].tolist(), b["entry"].tolist(), strict=True)):
                rows[key] = (b["jets"][row].numpy().tobytes(), len(rows))
        epochs.append(rows)
    assert set(epochs[0]) == set(epochs[1])
    assert all(epochs[0][k][0] == epochs[1][k][0] for k in epochs[0])  # same values per entry
    assert [epochs[0][k][1] for k in epochs[0]] != [epochs[1][k][1] for k in epochs[0]]  # other order


def test_workers_deliver_the_same_values_as_the_main_process(event_files):
    """Per entry, every array of the batches agrees with and without workers (the order differs:
    entries are dealt to workers), and batches kept by the caller stay intact."""
    rows = {}
    for workers in (0, 2):
        dm = RootDataModule(**event_config(f"{event_files}/*.root", num_workers=workers, batch_size=16))
        dm.setup()
        batches = list(dm.train_dataloader())  # more batches per worker than shared-memory slots
        assert len(batches) > 2 * 6
        table = {}
        for b in batches:
            for row, key in enumerate(zip(b["file_index"].tolist(), b["entry"].tolist(), strict=True)):
                table[key] = {
                    "jets": b["jets"][row].numpy().copy(),
                    "jet_mask": b["jet_mask"][row].numpy().copy(),
                    "event": b["event"][row].numpy().copy(),
                    "label": b["label"][row].item(),
                    "targets": b["targets"][row].numpy().copy(),
                    "weight": b["weight"][row].item(),
                    "MET_pt": b["observers"]["MET_pt"][row].item(),
                }
        rows[workers] = table
    assert rows[0].keys() == rows[2].keys()
    for key, values in rows[0].items():
        for name, value in values.items():
            np.testing.assert_array_equal(rows[2][key][name], value, err_msg=f"{name} of entry {key}")


def test_open_files_are_bounded_and_reopened_when_needed(event_files, monkeypatch):
    from hepnn.data import dataset

    def epochs(dm):
        dm.setup()
        batches = []
        for epoch in range(2):
            dm.datasets["train"].set_epoch(epoch)
            batches += all_batches(dm, "train")
        return batches

    unbounded = RootDataModule(**event_config(f"{event_files}/*.root"))
    reference = epochs(unbounded)
    n_files = len({c.path for c in unbounded.datasets["train"].chunks})
    assert n_files > 2 and len(unbounded.datasets["train"]._trees) == n_files
    monkeypatch.setattr(dataset, "MAX_OPEN_FILES", 2)
    bounded = RootDataModule(**event_config(f"{event_files}/*.root"))
    for a, b in zip(reference, epochs(bounded), strict=True):
        np.testing.assert_array_equal(a["jets"].numpy(), b["jets"].numpy())
        np.testing.assert_array_equal(a["entry"].numpy(), b["entry"].numpy())
    assert len(bounded.datasets["train"]._trees) == 2


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_chunk_cache_gives_the_same_batches(event_files, tmp_path, mode):
    plain = RootDataModule(**event_config(f"{event_files}/*.root"))
    cached = RootDataModule(**event_config(f"{event_files}/*.root", cache=mode, cache_dir=str(tmp_path)))
    for dm in (plain, cached):
        dm.setup()
    for epoch in range(2):  # the first epoch fills the cache, the second reads it
        for dm in (plain, cached):
            dm.datasets["train"].set_epoch(epoch)
        for a, b in zip(all_batches(plain, "train"), all_batches(cached, "train"), strict=True):
            for key in ("jets", "jet_mask", "event", "label", "entry", "file_index", "targets"):
                np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert len(list(cached.chunk_cache_dir.glob("*.chunk"))) == len(cached.datasets["train"].chunks)
    if mode == "disk":
        assert cached.chunk_cache_dir.is_relative_to(tmp_path)


def test_automatic_standardisation_is_cached_invalidated_and_checkpointed(event_files, tmp_path, monkeypatch):
    files = tmp_path / "files"
    files.mkdir()
    for path in sorted(event_files.glob("*.root"))[:2]:
        (files / path.name).write_bytes(path.read_bytes())
    cfg = event_config(f"{files}/*.root", cache_dir=str(tmp_path / "cache"), standardize={"fraction": 0.5})
    cfg["inputs"]["jets"]["features"]["jet_logpt"] = {"center": "auto", "scale": "auto"}
    dm = RootDataModule(**cfg)
    dm.setup()
    center, scale = dm.spec.standardization()["jets"]["jet_logpt"]
    # expected: median and half the central 68 % of log pT of the kept (4 hardest) jets of the
    # first half of each file's training entries
    values = []
    for path in dm.source_files():
        pt = uproot.open(path)["Events"]["Jet_pt"].array(entry_stop=75)  # 0.5 of 150 training entries
        values.append(ak.flatten(np.log(ak.sort(pt, ascending=False)[:, :4])).to_numpy())
    expected = standardize.robust_center_scale(np.concatenate(values))
    assert (center, scale) == pytest.approx(expected)
    cache_files = list((tmp_path / "cache").glob("standardization-*.json"))
    assert len(cache_files) == 1
    # stored in the checkpoint state as plain data, and restored from it
    state = json.loads(json.dumps(dm.state_dict()))
    assert state["spec"]["inputs"]["jets"]["features"]["jet_logpt"]["center"] == pytest.approx(center)
    # a second run hits the cache: computing again would fail
    monkeypatch.setattr(standardize, "compute_standardization", lambda *a, **k: pytest.fail("not cached"))
    again = RootDataModule(**cfg)
    again.setup()
    assert again.spec.standardization()["jets"]["jet_logpt"] == pytest.approx([center, scale])
    restored = RootDataModule(**cfg)
    restored.load_state_dict(state)
    restored.setup()
    assert restored.spec.standardization() == dm.spec.standardization()
    monkeypatch.undo()
    # a changed input file changes the key: recomputed, a second cache entry
    write_events(files / "events_0_zlib.root", make_events(seed=99))
    changed = RootDataModule(**cfg)
    changed.setup()
    assert changed.spec.standardization()["jets"]["jet_logpt"] != pytest.approx([center, scale])
    assert len(list((tmp_path / "cache").glob("standardization-*.json"))) == 2


def test_compacting_the_stores_bounds_their_memory_and_changes_no_batch(event_files, monkeypatch):
    """A store (a read piece) lives while one of its entries waits in the reservoir, and the last
    ones wait long: the sparsest stores' waiting entries are copied together once the stores hold
    more than twice the entries waiting. The batches stay exactly the same."""
    from hepnn.data import dataset as dataset_module

    real = dataset_module.compact_stores

    def epochs(compact: bool) -> tuple[list[dict], list[tuple]]:
        held = []  # after each call: (entries the stores hold, entries waiting in them, compacted)

        def recording(stores, live_store, live_row, new_id, **kwargs):
            compacted = compact and real(stores, live_store, live_row, new_id, **kwargs)
            owned = [i for i, data in stores.items() if isinstance(data, ChunkData)]
            held.append((sum(len(stores[i]) for i in owned), np.isin(live_store, owned).sum(), compacted))
            return compacted

        monkeypatch.setattr(dataset_module, "compact_stores", recording)
        dm = RootDataModule(
            **event_config(f"{event_files}/*.root", chunk_size=20, buffer_size=100, batch_size=32)
        )
        dm.setup()
        batches = []
        for epoch in range(2):
            dm.datasets["train"].set_epoch(epoch)
            batches += all_batches(dm, "train")
        return batches, held

    plain, held_plain = epochs(compact=False)
    compacted, held = epochs(compact=True)
    assert len(plain) == len(compacted) > 10
    for a, b in zip(plain, compacted, strict=True):
        for key in ("jets", "jet_mask", "event", "label", "entry", "file_index", "weight"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert sum(c for *_, c in held) >= 5  # it did compact
    assert all(entries <= 2 * waiting for entries, waiting, _ in held)
    assert any(entries > 3 * waiting for entries, waiting, _ in held_plain)  # what it prevents
    assert max(e for e, *_ in held) < 0.7 * max(e for e, *_ in held_plain)


def test_per_split_files(event_files):
    paths = sorted(str(p) for p in event_files.glob("*.root"))
    dm = RootDataModule(**event_config({"train": paths[:2], "val": paths[2], "test": [paths[3]]}))
    dm.setup()
    assert {s: d.n_entries for s, d in dm.datasets.items()} == {"train": 600, "val": 300, "test": 300}
    test_files = {dm.source_files()[int(f)] for b in all_batches(dm, "test") for f in b["file_index"]}
    assert test_files == {paths[3]}


def test_non_finite_values_error_or_replace_and_count(tmp_path):
    write_events(tmp_path / "nan.root", make_events(seed=1, nan_rate=0.05))
    with pytest.raises(DataValueError, match=r"nan.root \(tree 'Events', entries .*Jet_eta: \d+ non-finite"):
        dm = RootDataModule(**event_config(str(tmp_path / "nan.root")))
        dm.setup()
        all_batches(dm, "test")
    dm = RootDataModule(**event_config(str(tmp_path / "nan.root"), nonfinite="replace", nonfinite_value=-1.0))
    dm.setup()
    batches = all_batches(dm, "test")
    replaced = sum(int(b["nonfinite_replaced"].sum()) for b in batches)
    eta = uproot.open(tmp_path / "nan.root")["Events"]["Jet_eta"].array()[210:]  # the test split
    assert replaced == int(ak.sum(np.isnan(eta))) > 0
    assert all(np.isfinite(b["jets"].numpy()).all() for b in batches)


def test_entries_without_jets_are_kept_or_refused(event_files):
    dm = RootDataModule(**event_config(f"{event_files}/events_0_zlib.root"))
    dm.setup()
    empty_rows = [b["jet_mask"].sum(dim=1) == 0 for b in all_batches(dm, "test")]
    assert sum(int(e.sum()) for e in empty_rows) > 0  # the sample has events without jets
    cfg = event_config(f"{event_files}/events_0_zlib.root")
    cfg["inputs"]["jets"]["on_empty"] = "error"
    dm = RootDataModule(**cfg)
    dm.setup()
    with pytest.raises(DataValueError, match=r"data.inputs.jets: empty list in \d+ entr"):
        all_batches(dm, "test")


def test_selection_keeping_nothing_is_an_error(event_files):
    dm = RootDataModule(**event_config(f"{event_files}/*.root", selection="MET_pt < 0"))
    with pytest.raises(
        DataInputError, match=r"data.selection 'MET_pt < 0' keeps none of the 600 entries of the train"
    ):
        dm.setup()


def test_integer_labels_out_of_range(event_files):
    dm = RootDataModule(
        **event_config(
            f"{event_files}/events_0_zlib.root", labels={"index": "is_signal + 1", "classes": ["a", "b"]}
        )
    )
    dm.setup()
    with pytest.raises(
        DataValueError, match=r"data.labels.index: 'is_signal \+ 1' must be an integer in 0..1"
    ):
        all_batches(dm, "test")


def test_unreadable_file_is_named_or_skipped_and_counted(event_files, tmp_path):
    data = (event_files / "events_0_zlib.root").read_bytes()
    (tmp_path / "truncated.root").write_bytes(data[: len(data) // 2])
    files = [f"{event_files}/events_1_lzma.root", str(tmp_path / "truncated.root")]
    with pytest.raises(
        DataInputError, match=r"cannot open .*truncated.root as a ROOT file \(truncated or corrupt"
    ):
        RootDataModule(**event_config(files)).setup()
    dm = RootDataModule(**event_config(files, on_bad_file="skip"))
    dm.setup()
    assert dm.skipped_files == [str(tmp_path / "truncated.root")]
    assert dm.summary()["data/skipped_files"] == 1 and dm.summary()["data/files"] == 1
    with pytest.raises(ConfigError, match=r"data\.on_bad_file must be one of"):
        RootDataModule(**event_config(files, on_bad_file="ignore")).setup()


def test_corrupt_basket_names_file_and_entries(tmp_path):
    path = tmp_path / "corrupt.root"
    write_events(path, make_events(seed=2), uproot.ZLIB(1))
    tree = uproot.open(path)["Events"]
    seek = tree["Jet_pt"].member("fBasketSeek")[1]  # the second basket of Jet_pt
    data = bytearray(path.read_bytes())
    data[seek + 80 : seek + 200] = bytes(120)
    path.write_bytes(bytes(data))
    dm = RootDataModule(**event_config(str(path)))
    dm.setup()  # the header and the metadata are intact
    with pytest.raises(
        DataInputError, match=r"corrupt.root \(tree 'Events', entries \d+-\d+\), branches .*Jet_pt"
    ):
        for split in ("train", "val", "test"):
            all_batches(dm, split)


def test_uneven_ranks_get_equal_batch_counts():
    counts = [37, 0, 12, 55, 3]
    chunks = list(range(len(counts)))
    for world, workers in [(2, 2), (3, 1), (4, 3)]:
        pieces = deal(chunks, counts, world, workers)
        seen = [
            (p.chunk, i) for rank in pieces for worker in rank for p in worker for i in range(p.first, p.last)
        ]
        assert sorted(seen) == [(c, i) for c in chunks for i in range(counts[c])]
        entries = [[sum(p.n_selected for p in w) for w in rank] for rank in pieces]
        sizes = batch_plan(entries, batch_size=8)
        assert len({sum(len(w) for w in rank) for rank in sizes}) == 1
        assert [[sum(w) for w in rank] for rank in sizes] == entries
        assert all(0 < s <= 8 for rank in sizes for w in rank for s in w)
    with pytest.raises(ConfigError, match="too few for the 2 batches"):
        batch_plan([[1, 1], [1, 0]], batch_size=8)


def test_recurrent_net_on_jets_in_events_ignores_the_padding(event_files):
    """JetSequenceRNN over an event-level collection (the jets of NanoAOD-like events, hardest
    last): the same events give the same outputs whatever the padded length."""
    import torch

    from hepnn.nets.sequence import JetSequenceRNN

    torch.manual_seed(0)
    net = JetSequenceRNN(in_channels=2, n_outputs=2, cell="gru", hidden=16, bidirectional=True).eval()
    outputs = []
    for length in (6, 10):
        jets = {"length": length, "order": {"by": "Jet_pt", "descending": False}}
        cfg = event_config(f"{event_files}/*.root")
        cfg["inputs"]["jets"] = {**cfg["inputs"]["jets"], **jets}
        dm = RootDataModule(**cfg)
        dm.setup()
        batches = all_batches(dm, "test")
        with torch.no_grad():
            outputs.append(torch.cat([net(b["jets"], b["jet_mask"]) for b in batches]))
        assert max(int(b["jet_mask"].sum(dim=1).max()) for b in batches) == 6  # the most jets in an event
    torch.testing.assert_close(outputs[0], outputs[1])


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory):
    """Events with fixed-size arrays per entry: 81 x 8 time traces and 81 start times."""
    rng = np.random.default_rng(9)
    n = 120
    path = tmp_path_factory.mktemp("traces") / "traces.root"
    with uproot.recreate(path) as f:
        f.mktree(
            "events", {"traces": (np.float32, (81, 8)), "start": (np.float32, (81,)), "energy": np.float32}
        )
        f["events"].extend(
            {
                "traces": rng.exponential(2.0, (n, 81, 8)).astype(np.float32),
                "start": rng.normal(500.0, 100.0, (n, 81)).astype(np.float32),
                "energy": rng.uniform(18.5, 20.0, n).astype(np.float32),
            }
        )
    return path


def trace_config(path, **stations) -> dict:
    return {
        "files": str(path),
        "tree": "events",
        "variables": {"log_traces": "np.log1p(traces)"},
        "inputs": {
            "traces": {"shape": [1, 9, 9, 8], "features": {"log_traces": {"center": 1.0, "scale": 0.5}}},
            "stations": {
                "shape": [9, 9],
                "features": {"start": {"center": "auto", "scale": "auto"}, **stations},
            },
        },
        "targets": {"log10_energy": "energy"},
        "split": {"train": 0.5, "val": 0.0, "test": 0.5},
        "batch_size": 16,
        "eval_batch_size": 16,
        "num_workers": 0,
        "seed": 1,
        "cache_dir": str(path.parent / "cache"),
    }


def test_fixed_size_arrays_come_out_reshaped_and_standardised(trace_file):
    dm = RootDataModule(**trace_config(trace_file))
    dm.prepare_data()
    dm.setup()
    batches = all_batches(dm, "test")
    traces = np.concatenate([b["traces"].numpy() for b in batches])
    stations = np.concatenate([b["stations"].numpy() for b in batches])
    entries = np.concatenate([b["entry"].numpy() for b in batches])
    raw = uproot.open(trace_file)["events"].arrays(library="np")
    assert traces.shape == (60, 1, 1, 9, 9, 8) and stations.shape == (60, 1, 9, 9)
    expected = (np.log1p(raw["traces"][entries]).reshape(60, 1, 9, 9, 8) - 1.0) / 0.5
    np.testing.assert_allclose(traces[:, 0], expected, rtol=1e-5, atol=1e-5)
    center, scale = dm.spec.standardization()["stations"]["start"]
    assert abs(center - 500) < 15 and abs(scale - 100) < 15  # from the training entries, all stations
    np.testing.assert_allclose(
        stations[:, 0], (raw["start"][entries].reshape(60, 9, 9) - center) / scale, rtol=1e-4
    )
    assert DataSpec.from_config(dm.spec.to_config()).inputs == dm.spec.inputs


def test_fixed_size_arrays_of_the_wrong_size_or_per_entry_values_are_refused(trace_file):
    dm = RootDataModule(**trace_config(trace_file, energy={}))  # one value per entry, not 81
    with pytest.raises(DataValueError, match=r"data\.inputs\.stations\.features\.energy has shape \(\d+,\)"):
        dm.setup()
        all_batches(dm, "test")
    with pytest.raises(ConfigError, match=r"data\.inputs\.traces\.shape must be a list of positive integers"):
        RootDataModule(
            **{**trace_config(trace_file), "inputs": {"traces": {"shape": [0, 3], "features": ["traces"]}}}
        ).setup()


def test_batches_before_follows_the_dataloaders_turns():
    # workers take turns; one that has run out drops out of the turn
    assert batches_before([3, 1, 2], 0) == [0, 0, 0]
    assert batches_before([3, 1, 2], 4) == [2, 1, 1]
    assert batches_before([3, 1, 2], 5) == [2, 1, 2]
    assert batches_before([3, 1, 2], 6) == [3, 1, 2]
    with pytest.raises(ValueError, match="cannot skip 7 batches of an epoch of 6"):
        batches_before([3, 1, 2], 7)


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_a_resumed_epoch_delivers_exactly_the_batches_not_yet_trained(event_files, workers):
    """Skipping the first k batches of an epoch (resuming from a mid-epoch checkpoint) gives the
    rest of the uninterrupted epoch: the same batches with the same values (in the same order
    without workers; with workers the DataLoader's turn starts at worker 0 again)."""
    dm = RootDataModule(**event_config(f"{event_files}/*.root", num_workers=workers, batch_size=16))
    dm.setup()
    dataset = dm.datasets["train"]
    dataset.set_epoch(1)

    def content(batch) -> tuple:
        return tuple(zip(batch["file_index"].tolist(), batch["entry"].tolist(), strict=True))

    whole = {content(b): b for b in dm._loader("train")}
    order = list(whole)
    assert len(whole) == len(dataset) > 2 * max(workers, 1)
    for k in (1, workers + 1, len(whole) - 1, len(whole)):
        dataset.set_epoch(1, resume_after=k)
        rest = list(dm._loader("train"))
        if workers == 0:
            assert [content(b) for b in rest] == order[k:]
        assert sorted(content(b) for b in rest) == sorted(order[k:])
        for batch in rest:
            np.testing.assert_array_equal(batch["jets"].numpy(), whole[content(batch)]["jets"].numpy())


def within_seconds(seconds: float, function, *args):
    """``function(*args)``, run in a thread; fails the test if it takes longer (a hang)."""
    import threading

    result = []
    thread = threading.Thread(target=lambda: result.append(function(*args)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"{function.__name__}{args} did not finish within {seconds} s"
    return result[0]


def test_persistent_workers_follow_the_epochs(event_files):
    """One loader over several epochs, as Lightning uses it: the same two worker processes serve
    every epoch, and each epoch delivers exactly what a new loader would, in the same order,
    also after an epoch stopped early (limit_train_batches) and for a resumed epoch. Batches
    the caller keeps stay intact while later epochs reuse the workers' shared memory."""
    dm = RootDataModule(**event_config(f"{event_files}/*.root", num_workers=2, batch_size=16))
    dm.setup()
    dataset = dm.datasets["train"]
    loader = dm.train_dataloader()
    assert loader.persistent_workers

    def content(batch) -> tuple:
        return tuple(zip(batch["file_index"].tolist(), batch["entry"].tolist(), strict=True))

    def fresh(epoch: int) -> list[dict]:
        dataset.set_epoch(epoch)
        return list(dm._loader("train"))  # a new loader, new workers

    def persistent(epoch: int, resume_after: int = 0) -> list[dict]:
        dataset.set_epoch(epoch, resume_after)
        return list(loader)

    kept = persistent(0)
    workers = [w.pid for w in loader._iterator._workers]
    expected = {epoch: fresh(epoch) for epoch in range(4)}
    assert len(kept) > 2 * 10  # more batches per worker than shared-memory slots
    assert [content(b) for b in expected[0]] != [content(b) for b in expected[1]]
    for epoch in (1, 2):
        assert [content(b) for b in persistent(epoch)] == [content(b) for b in expected[epoch]]

    def stop_early(times: int) -> None:
        for _ in range(times):
            stopped = iter(loader)
            dataset.set_epoch(3)
            next(stopped), next(stopped)
            stopped.close()

    # what each stopped epoch left on the way must not fill the workers' rings (they would wait)
    within_seconds(60, stop_early, 5)
    resumed = within_seconds(60, persistent, 3, 5)
    assert sorted(map(content, resumed)) == sorted(map(content, expected[3][5:]))
    assert [content(b) for b in persistent(3)] == [content(b) for b in expected[3]]
    assert [w.pid for w in loader._iterator._workers] == workers
    for ours, reference in zip(kept, expected[0], strict=True):
        for key in ("jets", "jet_mask", "event", "label", "entry", "targets", "weight"):
            np.testing.assert_array_equal(ours[key].numpy(), reference[key].numpy(), err_msg=key)


def test_the_datamodule_keeps_its_loaders_for_their_workers_to_persist(event_files):
    """Lightning asks for loaders every epoch (the trainer reloads them for the epoch's chunk
    order): each split's loader is the same object until the datasets change (the epochs reaching
    its workers: test_persistent_workers_follow_the_epochs)."""
    dm = RootDataModule(**event_config(f"{event_files}/*.root", num_workers=2, batch_size=16))
    dm.setup()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert dm.train_dataloader() is train and dm.val_dataloader() is val and dm.test_dataloader() is not val
    assert train.persistent_workers and train.dataset is dm.datasets["train"]
    dm.datasets = {}
    dm.setup()  # new datasets: a new loader for them
    again = dm.train_dataloader()
    assert again is not train and again.dataset is dm.datasets["train"]


SIGNALS_SCRIPT = """
import os, signal, sys
from multiprocessing import forkserver, resource_tracker
from hepnn.data.datamodule import RootDataModule

config = {config!r}
dm = RootDataModule(**config)
dm.setup()
received = []
signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
iterator = iter(dm.train_dataloader())
batches = [next(iterator)]
helpers = [forkserver._forkserver._forkserver_pid, resource_tracker._resource_tracker._pid]
workers = [w.pid for w in iterator.gi_frame.f_locals["iterator"]._workers]
assert len(workers) == 2 and all(helpers), (workers, helpers)
for pid in [*workers, *helpers]:
    for batch_system_signal in (signal.SIGUSR2, signal.SIGUSR1):
        os.kill(pid, batch_system_signal)
os.kill(os.getpid(), signal.SIGUSR2)
batches.extend(iterator)
for pid in helpers:
    os.kill(pid, 0)  # still alive
print("batches", len(batches), "of", len(dm.datasets["train"]), "received", received)
"""


def test_workers_and_their_helpers_ignore_the_batch_systems_signals(event_files):
    """Slurm signals every process of a job step: the DataLoader workers, their fork server and the
    resource tracker keep going on the warning signals SIGUSR1 and SIGUSR2; the training process
    receives them. (In a fresh process, as a training job is, with the helpers started by the loader.)"""
    import signal
    import subprocess
    import sys

    config = event_config(f"{event_files}/*.root", num_workers=2, batch_size=16)
    script = SIGNALS_SCRIPT.format(config=config)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[1] == words[3] and int(words[1]) > 4, result.stdout
    assert words[5] == f"[{int(signal.SIGUSR2)}]", result.stdout  # once, in the training process
    assert "died unexpectedly" not in result.stderr, result.stderr[-3000:]


MAIN_MODULE_PROBE = """
import gc
import sys

import torch
from torch.utils.data import IterableDataset

from hepnn.data.loading.loader import BatchLoader


class Probe(IterableDataset):
    def __iter__(self):
        # this module runs again in the worker as __mp_main__; under its own name it is there
        # only if the fork server imported it
        yield {
            "preloaded": torch.tensor("main_module_probe" in sys.modules),
            "frozen": torch.tensor(gc.get_freeze_count()),
        }


if __name__ == "__main__":
    assert gc.get_freeze_count() == 0  # only the fork server freezes its objects
    batch = next(iter(BatchLoader(Probe(), num_workers=1)))
    print("preloaded", bool(batch["preloaded"]), "frozen", int(batch["frozen"]))
"""


def test_the_fork_server_imports_the_module_run_with_python_m_and_freezes_its_imports(tmp_path):
    """``python -m hepnn.train``: every new worker runs the main module's top level again, so the
    fork server imports it once and the workers find its imports (Hydra) done. The objects of the
    fork server's imports are frozen: the workers' garbage collections skip them (and so do not
    copy the memory pages they share with the fork server)."""
    import os
    import subprocess
    import sys

    (tmp_path / "main_module_probe.py").write_text(MAIN_MODULE_PROBE)
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "main_module_probe"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[:3] == ["preloaded", "True", "frozen"], result.stdout
    assert int(words[3]) > 100_000, result.stdout  # torch, numpy, awkward, uproot: about 400k


MAIN_SCRIPT_PROBE = """
import os
import sys

import torch
from torch.utils.data import IterableDataset

import script_import_probe  # records the process that imported it
from hepnn.data.loading.loader import MAIN_SCRIPT_VARIABLE, BatchLoader

RAN_IN = os.getpid()  # the process that ran this script's top level (again, as __mp_main__)


class Probe(IterableDataset):
    def __iter__(self):
        main = sys.modules["__mp_main__"]
        yield {
            "script_ran_here": torch.tensor(main.RAN_IN == os.getpid()),
            "import_done_here": torch.tensor(script_import_probe.IMPORTED_IN == os.getpid()),
            "variable_left": torch.tensor(MAIN_SCRIPT_VARIABLE in os.environ),
        }


if __name__ == "__main__":
    batches = [next(iter(BatchLoader(Probe(), num_workers=2))) for _ in range(2)]
    for batch in batches:
        print(*(f"{key}={bool(value)}" for key, value in batch.items()))
    print("variable_set_here", MAIN_SCRIPT_VARIABLE in os.environ)
"""


def test_the_fork_server_runs_the_script_run_with_python_once_for_all_workers(tmp_path):
    """``python script.py``: every new worker would run the script's top level again (and import
    what it imports); the fork server runs it once, and the workers of every loader find it done.
    The script's path reaches the fork server through the environment only while it starts."""
    import subprocess
    import sys

    (tmp_path / "probe_script.py").write_text(MAIN_SCRIPT_PROBE)
    (tmp_path / "script_import_probe.py").write_text("import os\n\nIMPORTED_IN = os.getpid()\n")
    result = subprocess.run(
        [sys.executable, "probe_script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    expected = "script_ran_here=False import_done_here=False variable_left=False"
    assert lines == [expected, expected, "variable_set_here False"], result.stdout
    assert "could not run" not in result.stderr, result.stderr[-3000:]


def test_reading_ahead_gives_the_same_batches(event_files):
    """A background thread reading chunks ahead changes nothing in what the epochs deliver."""
    epochs = {}
    for read_ahead in (0, 3):
        dm = RootDataModule(**event_config(f"{event_files}/*.root", read_ahead=read_ahead, chunk_size=50))
        dm.setup()
        assert dm.datasets["train"].read_ahead == read_ahead
        epochs[read_ahead] = []
        for epoch in range(2):
            dm.datasets["train"].set_epoch(epoch)
            epochs[read_ahead] += all_batches(dm, "train") + all_batches(dm, "val")
    assert len(epochs[0]) == len(epochs[3]) > 10
    for a, b in zip(epochs[0], epochs[3], strict=True):
        for key in ("jets", "jet_mask", "event", "label", "entry", "file_index", "targets", "weight"):
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    with pytest.raises(ConfigError, match=r"data\.read_ahead must be a non-negative integer"):
        RootDataModule(**event_config(f"{event_files}/*.root", read_ahead=-1)).setup()


def test_a_loop_that_stops_early_stops_the_read_ahead_thread(event_files):
    import threading

    def read_ahead_threads() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("hepnn-read-ahead") and t.is_alive()]

    dm = RootDataModule(**event_config(f"{event_files}/*.root", read_ahead=2, chunk_size=50, batch_size=8))
    dm.setup()
    batches = iter(dm.train_dataloader())
    first = next(batches)
    assert len(first["label"]) == 8 and read_ahead_threads()
    batches.close()  # a trainer that stops early (limit_train_batches) drops its iterator
    assert not read_ahead_threads()
