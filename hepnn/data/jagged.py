"""A light jagged array for fast element-wise expressions: flat numpy content plus offsets.

Expressions such as ``np.log(part_pt / jet_pt)`` are evaluated on the flat content directly:
numpy ufuncs and Python operators act on the content, a per-entry numpy array is broadcast to
the elements with one ``np.repeat`` (cached), and jagged operands must share their offsets
(all branches of one collection do). This skips awkward's general broadcasting machinery, which
costs more than the arithmetic for the few-particle lists of jets. Anything else (``ak.*``
functions, mixed collections) converts to an awkward array with :meth:`FlatJagged.to_awkward`.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin


class FlatJagged(NDArrayOperatorsMixin):
    """Lists of numbers: ``content[offsets[i]:offsets[i + 1]]`` is the list of entry ``i``."""

    __slots__ = ("_repeats", "content", "offsets")

    def __init__(self, content: np.ndarray, offsets: np.ndarray, repeats: dict | None = None):
        self.content = content
        self.offsets = offsets
        self._repeats = {} if repeats is None else repeats  # shared by arrays with these offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def ndim(self) -> int:
        return 2

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_awkward(self) -> ak.Array:
        content = ak.contents.NumpyArray(self.content)
        return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(self.offsets), content))

    @classmethod
    def from_awkward(cls, array: ak.Array) -> FlatJagged | None:
        """The flat form of a list-of-numbers awkward array, or None if it is anything else."""
        layout = ak.to_layout(array)
        if isinstance(layout, ak.contents.ListOffsetArray | ak.contents.ListArray) and isinstance(
            layout.content, ak.contents.NumpyArray
        ):
            if layout.content.data.ndim != 1:
                return None
            if isinstance(layout, ak.contents.ListArray):
                layout = layout.to_ListOffsetArray64(True)
            offsets = np.asarray(layout.offsets.data, dtype=np.int64)
            content = np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
            return cls(content, offsets - offsets[0])
        return None

    def broadcast(self, per_entry: np.ndarray) -> np.ndarray:
        """One value per entry repeated for each element of the entry's list."""
        key = id(per_entry)
        cached = self._repeats.get(key)
        if cached is not None and cached[0] is per_entry:
            return cached[1]
        repeated = np.repeat(per_entry, self.counts)
        self._repeats[key] = (per_entry, repeated)
        return repeated

    def same_lists(self, other: FlatJagged) -> bool:
        return other.offsets is self.offsets or np.array_equal(other.offsets, self.offsets)

    def _flat_operands(self, inputs) -> list | None:
        """``inputs`` as arrays over the elements, or None if they need awkward's broadcasting."""
        args = []
        for x in inputs:
            if isinstance(x, FlatJagged):
                if not self.same_lists(x):
                    return None
                args.append(x.content)
            elif isinstance(x, np.ndarray) and x.ndim == 1:
                if len(x) != len(self):
                    raise ValueError(f"cannot broadcast {len(x)} values per entry to {len(self)} entries")
                args.append(self.broadcast(x))
            elif isinstance(x, ak.Array):
                return None
            else:
                args.append(x)
        return args

    def _wrap(self, result):
        if isinstance(result, tuple):
            return tuple(FlatJagged(r, self.offsets, self._repeats) for r in result)
        return FlatJagged(result, self.offsets, self._repeats)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs.get("out") is not None:
            return NotImplemented
        args = self._flat_operands(inputs)
        if args is None:
            return ufunc(*(as_awkward(x) for x in inputs), **kwargs)
        return self._wrap(ufunc(*args, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        """Element-wise numpy functions that are not ufuncs (``np.where``, ``np.clip``) act on the
        content; anything else goes through awkward."""
        if func in ELEMENTWISE and all(not isinstance(v, FlatJagged | ak.Array) for v in kwargs.values()):
            flat = self._flat_operands(args)
            if flat is not None:
                return self._wrap(func(*flat, **kwargs))
        return func(*(as_awkward(x) for x in args), **{k: as_awkward(v) for k, v in kwargs.items()})


ELEMENTWISE = {np.where, np.clip, np.round, np.around}


def as_awkward(value):
    """``value`` with flat jagged arrays converted to awkward arrays (for ``ak.*`` functions)."""
    return value.to_awkward() if isinstance(value, FlatJagged) else value
