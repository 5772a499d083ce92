"""Named settings, written once: the student's loss recipes and the whole-pipeline presets.

A recipe fills every loss flag the user left unset (``None``; :meth:`crossdistill.config.StudentConfig.resolve`); a flag
given on the command line always wins.

- ``ranking`` (the default): what moves a bi-encoder's *ranking* — listwise KL from the teacher's logits
  (τ 1) to the student's ``scale · cos`` (scale: the student's pretraining inverse temperature, 100 for e5
  and 20 otherwise, see :func:`crossdistill.models.similarity_scale`), plus an in-batch InfoNCE on the labelled positives
  (every other passage of the batch is a negative). Measured in README "Results" (SciFact, KorQuAD).
- ``original``: the design in SPEC.md — KL between softmax(prob / 0.2) and softmax(((cos + 1) / 2) / 0.2),
  plus 0.3 × contrastive margin and 0.4 × negative penalty. It pushes the *scores* towards the original's
  targets (mean negative ≤ 0.15, margin ≥ 0.7) rather than the order of the passages.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

STUDENT_RECIPES: dict[str, dict] = {
    "ranking": {"soft_labels": "logit", "tau": 1.0, "kl_student": "scaled", "soft_loss": "kl", "soft_weight": 1.0,
                "infonce_weight": 1.0, "contrastive_weight": 0.0, "negative_penalty_weight": 0.0,
                "teacher_fusion": "none"},
    "original": {"soft_labels": "prob", "tau": 0.2, "kl_student": "tau", "soft_loss": "kl", "soft_weight": 1.0,
                 "infonce_weight": 0.0, "contrastive_weight": 0.3, "negative_penalty_weight": 0.4,
                 "teacher_fusion": "none"},
}
DEFAULT_RECIPE = "ranking"


@dataclass(frozen=True)
class LossSettings:
    """Every setting one student step's loss reads, resolved (a recipe applied, the scale chosen): built once from
    the run's config (:meth:`from_config`) or by :func:`loss_settings`, never changed during a run."""

    soft_labels: str  # what the soft labels are: "logit" (teacher logits) or "prob" (sigmoid of them)
    tau: float  # teacher temperature of the listwise KL
    kl_student: str  # "scaled": student logits scale * cos; "tau": (cos + 1) / 2 / tau
    soft_loss: str  # "kl" or "margin_mse"
    soft_weight: float
    infonce_weight: float  # in-batch InfoNCE on the labelled positives
    contrastive_weight: float  # the original's margin term
    negative_penalty_weight: float  # the original's negative-score penalty
    scale: float  # inverse temperature on cosines (InfoNCE, MarginMSE, scaled KL)
    cross_device_negatives: bool = False  # other processes' passages as extra negatives
    kl_tau_squared: bool = False  # the KL multiplied by tau^2

    @classmethod
    def from_config(cls, cfg) -> "LossSettings":
        """From a resolved :class:`~crossdistill.config.StudentConfig` (its recipe applied, its scale chosen)."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls)}
        unset = [k for k, v in values.items() if v is None]
        if unset:
            raise ValueError(f"loss settings left unset: {', '.join(unset)} (apply the recipe and resolve the scale first)")
        return cls(**values)

    @property
    def student_tau(self) -> float | None:
        """The KL's student temperature on normalised scores: τ itself (original) or 1 / (2 · scale), which
        turns ``(cos + 1) / 2`` into the logits ``scale · cos`` up to a constant (ranking)."""
        return None if self.kl_student == "tau" else 1.0 / (2.0 * self.scale)


def loss_settings(recipe: str = DEFAULT_RECIPE, **overrides) -> LossSettings:
    """Every loss setting of ``recipe`` (plus ``overrides``; scale 20 unless given), as the training loop reads
    them: for library use, tests and benchmarks."""
    values = {**STUDENT_RECIPES[recipe], "scale": 20.0, "cross_device_negatives": False, "kl_tau_squared": False,
              **overrides}
    return LossSettings(**{f.name: values[f.name] for f in fields(LossSettings)})
