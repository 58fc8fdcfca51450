"""The benchmark's memory meter: bytes of tensors saved for backward that are alive at once.

Owns: `SavedTensorMeter`. Does not own: the pass it is run around (`harken.bench.workload.untimed_policy`)
or the CUDA peaks recorded from the timed passes (`harken.bench.workload.timed_step`).

Memory (`policy_activation_mb`, any device): the peak, over the policy pass, of the bytes of
tensors saved for backward that are alive at the same time, counted once per storage
(deduplicated by storage pointer), parameters excluded. It is measured with
`torch.autograd.graph.saved_tensors_hooks` in one extra policy pass per path before the timed
ones (the hooks cost Python time, so they stay out of the timings; the same pass gives the
gradients of the exactness check). Not counted: gradients,
optimizer states, temporaries that live only inside one operator, the reference and generation
passes. On CUDA, `peak_mb` per phase is also recorded from the timed passes:
`torch.cuda.max_memory_allocated()` (reset before the phase) minus the memory allocated when the
phase started.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class SavedTensorMeter:
    """Peak bytes of tensors saved for backward that are alive at once, once per storage.

    Use `with meter.track():` around a forward/backward. A saved tensor is wrapped in a holder
    whose lifetime is that of autograd's reference to it, so bytes are released when backward
    frees the graph (a micro-batch's activations stop counting after its backward).
    Storages of `exclude` tensors (the parameters) are not activations and are skipped.
    """

    def __init__(self, exclude: list[torch.Tensor] = ()):
        self.exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.live: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.current = 0
        self.peak = 0

    def acquire(self, ptr: int, nbytes: int) -> None:
        """A holder of storage `ptr` was created: count its bytes if it is the first."""
        entry = self.live.get(ptr)
        if entry is None:
            self.live[ptr] = [nbytes, 1]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            entry[1] += 1

    def release(self, ptr: int) -> None:
        """A holder of storage `ptr` was freed: uncount its bytes if it was the last."""
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def _pack(self, t: torch.Tensor):
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage
            return t
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or ptr in self.exclude:
            return t
        return _Held(t, ptr, nbytes, self)

    @staticmethod
    def _unpack(x):
        return x.tensor if isinstance(x, _Held) else x

    @contextmanager
    def track(self) -> Iterator["SavedTensorMeter"]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


class _Held:
    """A saved tensor as autograd keeps it: counted by the meter from creation until freed."""

    __slots__ = ("tensor", "ptr", "meter")

    def __init__(self, tensor: torch.Tensor, ptr: int, nbytes: int, meter: SavedTensorMeter):
        self.tensor, self.ptr, self.meter = tensor, ptr, meter
        meter.acquire(ptr, nbytes)

    def __del__(self):
        self.meter.release(self.ptr)
