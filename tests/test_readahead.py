"""Reading pieces ahead in a background thread: order, depth, errors and shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from hepnn.data.loading.readahead import ReadAhead
from hepnn.data.source import DataInputError


class RecordingLoad:
    """A load function that records which piece it read in which thread (and can be held)."""

    def __init__(self, hold: int | None = None, fail: int | None = None):
        self.calls: list[tuple[int, str]] = []
        self.hold = hold
        self.fail = fail
        self.release = threading.Event()
        self.holding = threading.Event()  # set once the held piece has started to be read

    def __call__(self, piece: int) -> str:
        if piece == self.hold:
            self.holding.set()
            self.release.wait(timeout=10)
        if piece == self.fail:
            raise DataInputError(f"piece {piece}: file.root (tree 'tree', entries 0-10) is corrupt")
        self.calls.append((piece, threading.current_thread().name))
        return f"loaded {piece}"


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.005)


def test_pieces_come_in_order_each_read_once_by_the_background_thread():
    load = RecordingLoad()
    with ReadAhead(load, list(range(6)), depth=2) as reader:
        assert [reader.get(i) for i in range(6)] == [f"loaded {i}" for i in range(6)]
    assert [piece for piece, _ in load.calls] == list(range(6))
    assert all(name.startswith("hepnn-read-ahead") for _, name in load.calls)


def test_at_most_depth_pieces_are_read_ahead():
    load = RecordingLoad()
    with ReadAhead(load, list(range(10)), depth=2) as reader:
        reader.get(0)
        wait_for(lambda: len(load.calls) == 3)
        time.sleep(0.05)
        assert [piece for piece, _ in load.calls] == [0, 1, 2]  # not 3: two ahead of the one asked for
        reader.get(1)
        wait_for(lambda: len(load.calls) == 4)
        assert sorted(reader._pending) == [2, 3]
        # a later piece (a resumed epoch skips some): the ones after it are read ahead, one passed
        # over is read when it is asked for, and no piece is read twice
        assert reader.get(5) == "loaded 5"
        assert reader.get(4) == "loaded 4"
    pieces = [piece for piece, _ in load.calls]
    assert len(pieces) == len(set(pieces)) and set(range(8)) <= set(pieces)


def test_depth_zero_reads_in_the_calling_thread():
    load = RecordingLoad()
    with ReadAhead(load, list(range(3)), depth=0) as reader:
        assert reader.get(1) == "loaded 1"
    assert load.calls == [(1, threading.current_thread().name)]


def test_an_error_while_reading_ahead_is_raised_where_the_piece_is_asked_for():
    load = RecordingLoad(fail=1)
    with ReadAhead(load, list(range(3)), depth=2) as reader:
        assert reader.get(0) == "loaded 0"  # piece 1 fails in the background meanwhile
        wait_for(lambda: len(load.calls) == 2)  # piece 2 is still read
        with pytest.raises(DataInputError, match=r"file.root \(tree 'tree', entries 0-10\) is corrupt"):
            reader.get(1)
        assert reader.get(2) == "loaded 2"


def test_closing_drops_pieces_not_yet_read_and_waits_for_the_thread():
    load = RecordingLoad(hold=1)
    reader = ReadAhead(load, list(range(5)), depth=3)
    reader.get(0)
    assert load.holding.wait(timeout=10)  # piece 1 is being read (held); 2 and 3 wait
    threading.Timer(0.2, load.release.set).start()
    reader.close()  # waits for piece 1; 2 and 3 are never read
    assert [piece for piece, _ in load.calls] == [0, 1]
    assert not any(t.name.startswith("hepnn-read-ahead") and t.is_alive() for t in threading.enumerate())


def test_depth_must_be_a_non_negative_integer():
    for depth in (-1, 1.5, True):
        with pytest.raises(ValueError, match="read-ahead depth"):
            ReadAhead(RecordingLoad(), [0], depth)
