"""Named settings, written once: the student's loss recipes and the whole-pipeline presets.

A recipe fills every loss flag the user left unset (``None``; :meth:`crossdistill.distill.config.StudentConfig.resolve`); a flag
given on the command line always wins.

- ``ranking`` (the default): what moves a bi-encoder's *ranking* — listwise KL from the teacher's logits
  (τ 1) to the student's ``scale · cos`` (scale: the student's pretraining inverse temperature, 100 for e5
  and 20 otherwise, see :func:`crossdistill.models.resolve.similarity_scale`), plus an in-batch InfoNCE on the labelled positives
  (every other passage of the batch is a negative). Measured in README "Results" (SciFact, KorQuAD).
- ``original``: the design in SPEC.md — KL between softmax(prob / 0.2) and softmax(((cos + 1) / 2) / 0.2),
  plus 0.3 × contrastive margin and 0.4 × negative penalty. It pushes the *scores* towards the original's
  targets (mean negative ≤ 0.15, margin ≥ 0.7) rather than the order of the passages.
"""

from __future__ import annotations

from dataclasses import fields

from crossdistill.losses.settings import LossSettings

STUDENT_RECIPES: dict[str, dict] = {
    "ranking": {"soft_labels": "logit", "tau": 1.0, "kl_student": "scaled", "soft_loss": "kl", "soft_weight": 1.0,
                "infonce_weight": 1.0, "contrastive_weight": 0.0, "negative_penalty_weight": 0.0, "in_batch_kl_weight": 0.0,
                "teacher_fusion": "none"},
    "original": {"soft_labels": "prob", "tau": 0.2, "kl_student": "tau", "soft_loss": "kl", "soft_weight": 1.0,
                 "infonce_weight": 0.0, "contrastive_weight": 0.3, "negative_penalty_weight": 0.4,
                 "in_batch_kl_weight": 0.0, "teacher_fusion": "none"},
}
DEFAULT_RECIPE = "ranking"


def recipe_values(name: str) -> str:
    """What each recipe sets ``name`` to, for a flag's help: "(ranking: 1.0; original: 0.2)" — the help never
    restates a number the recipes own."""
    return "(" + "; ".join(f"{recipe}: {values[name]}" for recipe, values in STUDENT_RECIPES.items()) + ")"


def recipe_summary(recipe: str) -> str:
    """A recipe's loss in one line, from its values and the loss's table of terms: "KL(logit/1.0) x1.0 + InfoNCE x1.0"."""
    from crossdistill.losses.total import TERMS

    v = STUDENT_RECIPES[recipe]
    terms = [f"{v['soft_loss'].upper()}({v['soft_labels']}/{v['tau']}) x{v['soft_weight']}"]
    terms += [f"{t.label} x{v[t.weight]}" for t in TERMS if t.name != "soft" and v[t.weight]]
    return " + ".join(terms)


def loss_settings(recipe: str = DEFAULT_RECIPE, **overrides) -> LossSettings:
    """Every loss setting of ``recipe`` (plus ``overrides``; scale 20 unless given), as the training loop reads
    them: for library use, tests and benchmarks."""
    values = {**STUDENT_RECIPES[recipe], "scale": 20.0, "cross_device_negatives": False, "kl_tau_squared": False,
              "matryoshka_dims": (), "matryoshka_weights": (),
              **overrides}
    return LossSettings(**{f.name: values[f.name] for f in fields(LossSettings)})
