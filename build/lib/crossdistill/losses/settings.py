"""The settings the student's composite loss reads, resolved once per run (a recipe applied, the scale chosen).

A new loss term adds its weight here, its function in its own file, its row in :data:`~crossdistill.losses.total.TERMS`
and its value in each recipe (:data:`crossdistill.distill.recipes.STUDENT_RECIPES`): nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MARGIN = 0.7  # the original's contrastive margin: positive - negative >= 0.7
NEGATIVE_THRESHOLD = 0.15  # the original's negative-score ceiling


@dataclass(frozen=True)
class LossSettings:
    """Every setting one student step's loss reads, resolved: built once from the run's config (:meth:`from_config`)
    or by :func:`crossdistill.distill.recipes.loss_settings`, never changed during a run."""

    soft_labels: str  # what the soft labels are: "logit" (teacher logits) or "prob" (sigmoid of them)
    tau: float  # teacher temperature of the listwise KL
    kl_student: str  # "scaled": student logits scale * cos; "tau": (cos + 1) / 2 / tau
    soft_loss: str  # "kl" or "margin_mse"
    soft_weight: float
    infonce_weight: float  # in-batch InfoNCE on the labelled positives
    contrastive_weight: float  # the original's margin term
    negative_penalty_weight: float  # the original's negative-score penalty
    scale: float  # inverse temperature on cosines (InfoNCE, MarginMSE, scaled KL)
    in_batch_kl_weight: float = 0.0  # the teacher's distribution over every passage of the batch
    cross_device_negatives: bool = False  # other processes' passages as extra negatives
    kl_tau_squared: bool = False  # the KL multiplied by tau^2
    matryoshka_dims: tuple[int, ...] = ()  # the whole loss again at each prefix dimension (losses/matryoshka.py)
    matryoshka_weights: tuple[float, ...] = ()  # one per dimension

    @classmethod
    def from_config(cls, cfg) -> "LossSettings":
        """From a resolved student config (its recipe applied, its scale chosen): the fields of the same names."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls) if not f.name.startswith("matryoshka_")}
        dims = getattr(cfg, "matryoshka_dims_list", ())
        values.update(matryoshka_dims=tuple(dims), matryoshka_weights=tuple(getattr(cfg, "matryoshka_weights_list", ())))
        unset = [k for k, v in values.items() if v is None]
        if unset:
            raise ValueError(f"loss settings left unset: {', '.join(unset)} (apply the recipe and resolve the scale first)")
        return cls(**values)

    @property
    def student_tau(self) -> float | None:
        """The KL's student temperature on normalised scores: τ itself (original) or 1 / (2 · scale), which
        turns ``(cos + 1) / 2`` into the logits ``scale · cos`` up to a constant (ranking)."""
        return None if self.kl_student == "tau" else 1.0 / (2.0 * self.scale)

    @property
    def needs_in_batch(self) -> bool:
        """Whether the loss reads every passage of the (global) batch: a weighted in-batch term (InfoNCE, in-batch KL),
        or cross-device negatives."""
        from crossdistill.losses.total import TERMS

        return any(t.in_batch and getattr(self, t.weight) for t in TERMS) or self.cross_device_negatives
