"""Named points of a training run where installed callbacks act. Nothing is installed in a normal run, so each
point is a loop over an empty list.

  ``step``        ``fn(step)`` before each optimizer step's work (step 0: before any work of the run)
  ``forward``     ``fn(step, n_texts)`` before the student encodes ``n_texts`` texts with one forward pass
  ``loss``        ``fn(step, loss) -> loss`` on each step's loss (a callback may replace it)
  ``checkpoint``  ``fn(step)`` half-way through writing a checkpoint (weights written, optimizer not yet)

The recovery tests install fault injectors here (:func:`crossdistill.core.faults.install`), so the training code holds
no test code, only these points.
"""

from __future__ import annotations

from typing import Callable

_CALLBACKS: dict[str, list[Callable]] = {"step": [], "forward": [], "loss": [], "checkpoint": []}


def install(point: str, fn: Callable) -> None:
    if point not in _CALLBACKS:
        raise ValueError(f"no hook point {point!r}; the points are {', '.join(_CALLBACKS)}")
    if fn not in _CALLBACKS[point]:
        _CALLBACKS[point].append(fn)


def clear() -> None:
    for fns in _CALLBACKS.values():
        fns.clear()


def at(point: str, step: int, *args) -> None:
    """Call every callback installed at ``point`` (not ``loss``)."""
    for fn in _CALLBACKS[point]:
        fn(step, *args)


def on_loss(step: int, loss):
    """The step's loss after every ``loss`` callback."""
    for fn in _CALLBACKS["loss"]:
        loss = fn(step, loss)
    return loss
