"""Named settings, written once: the student's loss recipes and the whole-pipeline presets.

A recipe fills every loss flag the user left unset (``None``); a flag given on the command line always wins.

- ``ranking`` (the default): what moves a bi-encoder's *ranking* — listwise KL from the teacher's logits
  (τ 1) to the student's ``scale · cos`` (scale: the student's pretraining inverse temperature, 100 for e5
  and 20 otherwise, see :func:`crossdistill.models.similarity_scale`), plus an in-batch InfoNCE on the labelled positives
  (every other passage of the batch is a negative). Measured in README "Results" (SciFact, KorQuAD).
- ``original``: the design in SPEC.md — KL between softmax(prob / 0.2) and softmax(((cos + 1) / 2) / 0.2),
  plus 0.3 × contrastive margin and 0.4 × negative penalty. It pushes the *scores* towards the original's
  targets (mean negative ≤ 0.15, margin ≥ 0.7) rather than the order of the passages.
"""

from __future__ import annotations

STUDENT_RECIPES: dict[str, dict] = {
    "ranking": {"soft_labels": "logit", "tau": 1.0, "kl_student": "scaled", "soft_loss": "kl", "soft_weight": 1.0,
                "infonce_weight": 1.0, "contrastive_weight": 0.0, "negative_penalty_weight": 0.0,
                "teacher_fusion": "none"},
    "original": {"soft_labels": "prob", "tau": 0.2, "kl_student": "tau", "soft_loss": "kl", "soft_weight": 1.0,
                 "infonce_weight": 0.0, "contrastive_weight": 0.3, "negative_penalty_weight": 0.4,
                 "teacher_fusion": "none"},
}
DEFAULT_RECIPE = "ranking"


def apply_recipe(args) -> None:
    """Fill the loss flags left at ``None`` from ``args.recipe`` (in place)."""
    for key, value in STUDENT_RECIPES[args.recipe].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


def student_tau(args) -> float | None:
    """The KL's student temperature on normalised scores: τ itself (original) or 1 / (2 · scale), which
    turns ``(cos + 1) / 2`` into the logits ``scale · cos`` up to a constant (ranking)."""
    return None if args.kl_student == "tau" else 1.0 / (2.0 * args.scale)


def loss_settings(recipe: str = DEFAULT_RECIPE, **overrides):
    """A namespace holding every loss setting of ``recipe`` (plus ``overrides``), as the training loop reads them
    from the command line: for library use, tests and benchmarks."""
    from argparse import Namespace

    args = Namespace(recipe=recipe, scale=20.0, cross_device_negatives=False, **{k: None for k in STUDENT_RECIPES[recipe]})
    for key, value in overrides.items():
        setattr(args, key, value)
    apply_recipe(args)
    return args
