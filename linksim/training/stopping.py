"""When to stop training and which weights to keep: the best validation score and a plateau rule."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Plateau:
    r"""Tracks the validation score :math:`s` (lower is better, dB) and says when it has stopped
    improving.

    A validation *improves* when :math:`s < s_{\text{best}} - \delta`; after ``patience``
    validations in a row without improvement, :meth:`stop` is true (``patience = 0``: never).
    The state (best score, its step, the count) travels in checkpoints, so a resumed run stops
    where an uninterrupted one would.

    :param patience: validations without improvement before stopping
    :param min_delta: :math:`\delta` in dB

    .. rubric:: Examples

    .. code-block:: python

        p = Plateau(patience=2, min_delta=0.1)
        [p.update(s, step) for step, s in enumerate([-10.0, -11.0, -11.05, -10.9], 1)]
        # [True, True, False, False]; p.best_step == 2, p.stop() is True
    """

    patience: int
    min_delta: float
    best: float = math.inf
    best_step: int = 0
    bad: int = 0

    def update(self, score: float, step: int, count: bool = True) -> bool:
        """Record a validation; True when it is the new best (then keep its weights).
        ``count = False``: a validation that does not improve is not counted against the patience
        (the precoders' label stage, which the rate stage is meant to leave behind)."""
        if score < self.best - self.min_delta or (self.best == math.inf and math.isfinite(score)):
            self.best, self.best_step, self.bad = float(score), int(step), 0
            return True
        self.bad += int(count)
        return False

    def stop(self) -> bool:
        return self.patience > 0 and self.bad >= self.patience

    def state(self) -> dict:
        return asdict(self)
