"""The shared-memory handoff of batches from DataLoader workers (hepnn.data.handoff)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hepnn.data.handoff import BatchHandoff


def make_build(number: int, rows: int):
    """A batch builder like BatchBuilder.build: every array made with ``allocate``."""

    def build(allocate):
        values = allocate("jets", (rows, 2, 3), np.float32)
        values[:] = number + np.arange(rows * 6, dtype=np.float32).reshape(rows, 2, 3)
        mask = allocate("jet_mask", (rows, 3), np.bool_)
        mask[:] = (np.arange(rows)[:, None] + number) % 2 == 0
        entry = allocate("entry", (rows,), np.int64)
        entry[:] = number * 100 + np.arange(rows)
        return {"jets": values, "jet_mask": mask, "entry": entry}

    return build


def test_received_batches_keep_their_values_when_the_slot_is_reused():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=8)
    received = []
    messages = []
    for number, rows in enumerate([8, 8, 8, 8, 5]):  # the last batch is smaller
        message = handoff.publish(0, make_build(number, rows))
        messages.append(message)
        received.append(handoff.receive(message))
    assert [m.slot for m in messages] == [0, 1, 0, 1, 0]
    assert [m.storage is not None for m in messages] == [True, True, False, False, False]
    for number, (batch, rows) in enumerate(zip(received, [8, 8, 8, 8, 5], strict=True)):
        expected = make_build(number, rows)(lambda key, shape, dtype: np.empty(shape, dtype))
        assert batch.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])


def test_a_worker_waits_for_a_free_slot_until_the_main_process_copies_or_stops():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=4)
    first = handoff.publish(0, make_build(0, 4))
    handoff.publish(0, make_build(1, 4))
    third = []
    worker = threading.Thread(target=lambda: third.append(handoff.publish(0, make_build(2, 4))))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and not third  # both slots hold batches not copied yet
    handoff.receive(first)
    worker.join(10)
    assert not worker.is_alive() and third[0].slot == 0

    stopped = BatchHandoff(num_workers=1, slots=2, max_rows=4)
    for number in range(2):
        stopped.publish(0, make_build(number, 4))
    worker = threading.Thread(target=lambda: stopped.publish(0, make_build(2, 4)))
    worker.start()
    stopped.stop()  # the main process stops reading: the worker must not wait forever
    worker.join(10)
    assert not worker.is_alive()


def test_a_batch_larger_than_the_planned_size_is_refused():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=4)
    handoff.publish(0, make_build(0, 4))
    with pytest.raises(AssertionError, match="does not fit"):
        handoff.publish(0, make_build(1, 9))
