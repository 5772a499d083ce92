"""Publishing the student: the kept model with its card, settings, metrics and distillation config; ``done.json`` last."""

from __future__ import annotations

from pathlib import Path

from crossdistill.core.checkpoint import load_trainable
from crossdistill.core.engine import (
    Loop,
    best_weights,
    publish_run,
)
from crossdistill.core.files import write_json
from crossdistill.core.run_state import RunState
from crossdistill.core.training import peak_memory
from crossdistill.data.versions import DataVersion
from crossdistill.distill.config import StudentConfig
from crossdistill.distill.inputs import SIDE_TEXTS, DistillData, StudentInputs, rotation_texts
from crossdistill.losses.total import WEIGHTS
from crossdistill.models.card import student_card
from crossdistill.models.export import export_student, parse_formats
from crossdistill.models.rotation import truncate_dims


# --------------------------------------------------------------------------- publishing
def publish_student(loop: Loop, state: RunState, cfg: StudentConfig, inputs: StudentInputs, run: DistillData, lora_cfg) -> None:
    """The best model (possibly the starting one) or, with ``--keep last``, the last epoch's, with its model card,
    settings (the resolved ones included) and metrics; ``done.json`` last."""
    model = loop.unwrapped
    if cfg.keep == "best":
        best = best_weights(loop)  # read on every process (a shared folder): each publishes, or waits, with the same
        load_trainable(model, best["trainable"])
        kept_epoch = best["info"]["epoch"]
    else:
        kept_epoch = state.history[-1]["epoch"]
    start, kept_row = state.history[0], state.history[kept_epoch]
    summary = {**peak_memory(), "kept": cfg.keep, "best_epoch": kept_epoch, "history": state.history,
               "guard": state.stage["guard"], "val_delta": {k: kept_row[k] - start[k] for k in start if k.startswith("val_")},
               "steps": state.step, "micro_batch_size": state.stage["micro_batch_size"], **run.stats}
    resolved = {"scale": cfg.scale, "query_prefix": model.query_prefix, "passage_prefix": model.passage_prefix,
                "score_cache": cfg.score_cache, "val_pool": run.stats["val_pool"],
                "data_source": _data_source(cfg), "teacher_fingerprint": inputs.teacher_fingerprint}

    # only the main process writes the folder (publish_run), so only it finds the axes
    rotation, rotation_info = (pca_rotation(model, cfg, loop.log) if cfg.pca_rotation and
                               loop.accelerator.is_main_process else (None, None))
    dims = list(cfg.matryoshka_dims_list) or (truncate_dims(rotation.shape[0]) if rotation is not None else [])

    def write(staging: Path) -> None:
        model.save(staging, rotation)
        write_json(staging / "training_args.json", {**cfg.to_dict(), "resolved": resolved})
        write_json(staging / "metrics.json", summary)
        (staging / "README.md").write_text(student_card(cfg, summary, cfg.student_name, _teacher_words(inputs), WEIGHTS),
                                           encoding="utf-8")
        export_student(staging, parse_formats(cfg.export), log=loop.log)  # --export: ONNX beside, named in the card
        write_json(staging / "distillation_config.json", {
            "teacher_path": cfg.teacher_path, "teacher_base_model":
                inputs.teachers.members[0].base_model if inputs.teachers else None, "teacher_scores": inputs.scores_path,
            "student_name": cfg.student_name, "query_prefix": model.query_prefix, "passage_prefix": model.passage_prefix,
            "max_len": cfg.max_len, "query_max_len": cfg.query_len, "passage_max_len": cfg.passage_len, "scale": cfg.scale, "data_version": cfg.data_version, "data_root": cfg.data_root,
            "matryoshka_dims": list(cfg.matryoshka_dims_list), "truncate_dims": dims, "pca_rotation": rotation_info,
            "matryoshka_pca_start": run.stats.get("matryoshka_pca_start"),
            "data_fingerprint": DataVersion.of(cfg).fingerprint(),
            "use_lora": bool(cfg.use_lora), **({"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
                                                 "lora_dropout": cfg.lora_dropout,
                                                 "target_modules": sorted(lora_cfg.target_modules)} if lora_cfg else {})})

    publish_run(loop, Path(cfg.output_dir), write, done={"stage": "student", "best_epoch": kept_epoch, **kept_row,
                                                         "val_delta": summary["val_delta"]},
                end_event={"best_epoch": kept_epoch, **{f"delta_{k}": v for k, v in summary["val_delta"].items()}})
    loop.log(f"saved student to {cfg.output_dir} ({cfg.keep} epoch {kept_epoch}; val MRR@10 "
             f"{start['val_mrr@10']:.4f} -> {kept_row['val_mrr@10']:.4f})")


def pca_rotation(model, cfg: StudentConfig, log, max_texts: int = 4096, what: str = "the published vectors"):
    """The principal axes of ``model``'s embeddings of the training texts (:func:`~crossdistill.distill.inputs.rotation_texts`:
    the passages, and with ``--pca_fit both`` the queries, each side weighing the same; at most ``max_texts`` a side,
    a seeded sample; as :meth:`~crossdistill.models.student.BiEncoderStudent.encode` gives them, its own rotation
    applied), and what the published config records of them (:mod:`crossdistill.models.rotation`): the kept student's
    at publishing (``--pca_rotation``), the starting student's before the first step (``--matryoshka_pca_start``)."""
    import random

    from crossdistill.models.rotation import energy_kept, principal_axes, sides_weighed_equally

    emb = {}
    for side, texts in rotation_texts(cfg).items():  # at least the embedding's dimension in all (checked before training)
        if len(texts) > max_texts:
            texts = random.Random(cfg.seed).sample(texts, max_texts)
        emb[side] = model.encode(texts, side, cfg.batch_size * 4)
    fit = sides_weighed_equally(list(emb.values()))
    axes = principal_axes(fit)
    dims = truncate_dims(fit.shape[1])[1:]
    kept = {side: energy_kept(e, axes, dims) for side, e in emb.items()}
    counts = " and ".join(f"{len(e)} training {SIDE_TEXTS[side]}" for side, e in emb.items())
    log(f"pca rotation: {what} turned onto the principal axes of {counts}; share of their squared length in the "
        "first " + "; ".join(f"{d}: " + " / ".join(f"{kept[side][d]:.3f}" for side in kept) for d in kept["passage"])
        + f" ({' / '.join(SIDE_TEXTS[side] for side in kept)})")
    return axes, {"fit": cfg.pca_fit, **{SIDE_TEXTS[side]: len(e) for side, e in emb.items()},
                  "energy_kept": {d: round(v, 4) for d, v in kept["passage"].items()},
                  **({"query_energy_kept": {d: round(v, 4) for d, v in kept["query"].items()}} if "query" in kept else {})}


def _teacher_words(inputs: StudentInputs) -> str:
    if inputs.teachers is None:
        return (f"the teacher scores of `{inputs.scores_path}` (no teacher model)" if inputs.scores_path else
                "none: trained on the labels alone (`--soft_weight 0`)")
    return inputs.teachers.describe()


def _data_source(cfg) -> str | None:
    """The absolute path of the source the data version was prepared from (its prepare_config.json), if recorded."""
    return DataVersion.of(cfg).source
