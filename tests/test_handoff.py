"""The shared-memory handoff of batches from DataLoader workers (hepnn.data.loading.handoff)."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from hepnn.data.loading.handoff import BatchHandoff


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


def expected(number: int, rows: int) -> dict:
    return make_build(number, rows)(lambda key, shape, dtype: np.empty(shape, dtype))


def assert_batch(batch: dict, number: int, rows: int) -> None:
    reference = expected(number, rows)
    assert batch.keys() == reference.keys()
    for key, values in reference.items():
        assert batch[key].numpy().dtype == values.dtype and batch[key].shape == values.shape
        np.testing.assert_array_equal(batch[key].numpy(), values, err_msg=f"{key} of batch {number}")


def test_copied_batches_keep_their_values_when_the_slot_is_reused():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=8, lend=0)
    received = []
    messages = []
    for number, rows in enumerate([8, 8, 8, 8, 5]):  # the last batch is smaller
        message = handoff.publish(0, make_build(number, rows))
        messages.append(message)
        received.append(handoff.receive(message))
    # a copied batch frees its slot at once: the lowest slot serves every batch, and its
    # memory goes to the main process once; the second arena is never made
    assert [m.slot for m in messages] == [0, 0, 0, 0, 0]
    assert [m.storage is not None for m in messages] == [True, False, False, False, False]
    assert handoff._arenas[1] is None
    for number, (batch, rows) in enumerate(zip(received, [8, 8, 8, 8, 5], strict=True)):
        assert_batch(batch, number, rows)


def test_lent_slots_are_views_never_reused_while_any_view_of_them_lives():
    handoff = BatchHandoff(num_workers=1, slots=4, max_rows=8, lend=1)
    first = handoff.receive(handoff.publish(0, make_build(0, 8)))
    arena = handoff._arenas[0].storage.data_ptr()  # slot 0's shared memory ("jets" comes first)
    assert first["jets"].data_ptr() == arena  # the slot's memory itself, not a copy
    kept_view = first["jets"][2:5]  # a view keeps the slot lent after the batch itself is gone
    assert handoff.busy.tolist() == [[1, 0, 0, 0]]  # the other slots are free
    copies = []
    for number in range(1, 7):  # the one slot that may be lent is: these are copied, their slots freed
        message = handoff.publish(0, make_build(number, 8))
        assert message.slot != 0
        copies.append(handoff.receive(message))
        in_slots = [a.storage.data_ptr() for a in handoff._arenas if a is not None]
        assert copies[-1]["jets"].data_ptr() not in in_slots
    del first
    gc.collect()
    assert handoff.busy.tolist() == [[1, 0, 0, 0]]
    np.testing.assert_array_equal(kept_view.numpy(), expected(0, 8)["jets"][2:5])
    for number, batch in enumerate(copies, start=1):
        assert_batch(batch, number, 8)
    del kept_view
    gc.collect()
    assert handoff.busy.tolist() == [[0, 0, 0, 0]]
    # freed: the worker may use it again, and a new batch may be lent from it
    slots = []
    while 0 not in slots:
        message = handoff.publish(0, make_build(9, 8))
        slots.append(message.slot)
        batch = handoff.receive(message)
    assert batch["jets"].data_ptr() == arena


def test_a_worker_waits_for_a_free_slot_until_the_main_process_releases_it_or_stops():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=4, lend=0)
    first = handoff.publish(0, make_build(0, 4))
    handoff.publish(0, make_build(1, 4))
    third = []
    worker = threading.Thread(target=lambda: third.append(handoff.publish(0, make_build(2, 4))))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive() and not third  # both slots hold batches not received yet
    handoff.receive(first)
    worker.join(10)
    assert not worker.is_alive() and third[0].slot == 0

    stopped = BatchHandoff(num_workers=1, slots=2, max_rows=4, lend=0)
    for number in range(2):
        stopped.publish(0, make_build(number, 4))
    late = []
    worker = threading.Thread(target=lambda: late.append(stopped.publish(0, make_build(2, 4))))
    worker.start()
    stopped.stop()  # the main process stops reading: the worker must not wait forever
    worker.join(10)
    assert not worker.is_alive() and late[0].slot == -1  # built outside the slots, never received


def test_a_new_epoch_reclaims_the_slots_of_batches_never_received():
    """An epoch stopped early: the DataLoader discards what was on the way, including the first
    message of a slot (which carried its memory). The next epoch gets every slot back, and the
    memory is sent again; a batch the consumer still holds stays untouched."""
    handoff = BatchHandoff(num_workers=1, slots=4, max_rows=4, lend=2)
    handoff.begin_epoch(0)
    assert handoff.epoch_settings() == (0, 0)
    held = handoff.receive(handoff.publish(0, make_build(0, 4)))  # lent, kept by the consumer
    discarded = [handoff.publish(0, make_build(n, 4)) for n in (1, 2)]
    assert all(m.storage is not None for m in discarded)
    handoff.stop()
    assert handoff.publish(0, make_build(3, 4)).slot == -1

    handoff.begin_epoch(1, resume_after=5)
    handoff.reclaim()
    assert handoff.busy.tolist() == [[1, 0, 0, 0]]
    assert handoff.epoch_settings() == (1, 5)
    messages = [handoff.publish(0, make_build(n, 4)) for n in (4, 5, 6)]
    assert sorted(m.slot for m in messages) == [1, 2, 3]
    assert [m.storage is not None for m in messages] == [True, True, True]  # 1 and 2 sent again
    for number, message in zip((4, 5, 6), messages, strict=True):
        assert_batch(handoff.receive(message), number, 4)
    assert_batch(held, 0, 4)


def test_a_batch_larger_than_the_planned_size_is_refused():
    handoff = BatchHandoff(num_workers=1, slots=2, max_rows=4, lend=0)
    handoff.publish(0, make_build(0, 4))
    with pytest.raises(AssertionError, match="does not fit"):
        handoff.publish(0, make_build(1, 9))
    with pytest.raises(ValueError, match="lending 4 shared-memory slots needs at least 6"):
        BatchHandoff(num_workers=1, slots=5, max_rows=4, lend=4)
