"""The training engine with a toy stage (issue #45): a linear model on a few items, driven by the same engine the
teacher and the student use — the seeded order of items, a resume that ends bit-identical to a run never
interrupted, the best model kept inside the checkpoints, a non-finite loss refused. Seconds, no model download."""

from pathlib import Path

import pytest
import torch

from crossdistill.core import hooks
from crossdistill.core.checkpoint import resume_point
from crossdistill.core.engine import Loop, Stage, best_weights, start_or_resume, total_steps, train_epochs
from crossdistill.core.errors import NonFiniteLoss
from crossdistill.core.events import EventLog, read_events
from crossdistill.core.ownership import mark_owner
from crossdistill.core.training import epoch_order, linear_schedule, make_optimizer, seed_everything

ITEMS, BATCH, EPOCHS = 10, 3, 3


class Toy(Stage):
    """y = 2x + 1 on ten items; val: minus the squared error, plus a score table the test may dictate."""

    select = ("val_score",)

    def __init__(self, model, scores=None, nan_at=None):
        self.model, self.scores, self.nan_at = model, scores, nan_at
        self.seen: list[list[int]] = []
        self.x = torch.linspace(-1, 1, ITEMS).unsqueeze(1)
        self.y = 2 * self.x + 1

    def step(self, items, step):
        self.seen.append(list(items))
        loss = ((self.model(self.x[items]) - self.y[items]) ** 2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        else:
            loss.backward()
        return {"loss": loss}

    def validate(self):
        with torch.no_grad():
            err = float(((self.model(self.x) - self.y) ** 2).mean())
        epoch = len([s for s in self.seen]) // -(-ITEMS // BATCH)
        score = self.scores[epoch] if self.scores else -err
        return {"val_score": score, "val_error": err}


def _run(out: Path, resume: bool = False, scores=None, nan_at=None, crash_at=None, lines=None):
    """One toy run in ``out`` (resumed from its last checkpoint with ``resume``); returns (model, stage, state)."""
    from accelerate import Accelerator

    resume_from, skipped = resume_point(out, resume, False, "student")
    seed_everything(0)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        mark_owner(out, "student", files=[])
    model = torch.nn.Linear(1, 1)
    optimizer = make_optimizer(model, 0.1, None, ())
    scheduler = linear_schedule(optimizer, total_steps(ITEMS, BATCH, EPOCHS), 0.0)
    acc = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    loop = Loop(acc, model, model, optimizer, scheduler, out / "checkpoints", EventLog(out / "events.jsonl"),
                (lines.append if lines is not None else lambda *a: None), n_items=ITEMS, global_batch=BATCH, epochs=EPOCHS, seed=7, max_grad_norm=1.0,
                log_steps=1, save_steps=2, settings={"toy": True})
    stage = Toy(model, scores, nan_at)
    if crash_at is not None:
        def crash(step):
            if step == crash_at:
                raise KeyboardInterrupt(f"crash at step {step}")
        hooks.install("step", crash)
    try:
        state = start_or_resume(loop, stage, 0.1, resume_from, skipped, "toy")
        train_epochs(loop, state, stage)
    finally:
        hooks.clear()
    return model, stage, state, loop


def test_the_order_is_a_function_of_seed_and_epoch():
    assert epoch_order(ITEMS, 7, 1) == epoch_order(ITEMS, 7, 1)
    assert epoch_order(ITEMS, 7, 1) != epoch_order(ITEMS, 7, 2) and sorted(epoch_order(ITEMS, 7, 2)) == list(range(ITEMS))
    assert epoch_order(ITEMS, 7, 1) != epoch_order(ITEMS, 8, 1)


def test_a_run_steps_through_every_item_of_every_epoch_in_its_seeded_order(tmp_path):
    model, stage, state, _ = _run(tmp_path / "a")
    assert state.step == total_steps(ITEMS, BATCH, EPOCHS) == 12
    for epoch in range(1, EPOCHS + 1):
        batches = stage.seen[(epoch - 1) * 4: epoch * 4]
        assert [i for b in batches for i in b] == epoch_order(ITEMS, 7, epoch)
    errors = [row["val_error"] for row in state.history]
    assert errors[-1] < errors[0] * 0.8  # it learns y = 2x + 1
    assert [e["event"] for e in read_events(tmp_path / "a" / "events.jsonl")].count("step") == 12


def test_a_crashed_run_resumes_bit_identical(tmp_path):
    straight, _, _, _ = _run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crashed", crash_at=7)  # after the step-6 checkpoint (mid-epoch 2), before step 7's work
    resumed, stage, state, _ = _run(tmp_path / "crashed", resume=True)
    assert stage.seen[0] == epoch_order(ITEMS, 7, 2)[6:9] and len(stage.seen) == 6  # on from the batch after it
    assert state.step == 12
    assert torch.equal(straight.weight, resumed.weight) and torch.equal(straight.bias, resumed.bias)
    events = [e["event"] for e in read_events(tmp_path / "crashed" / "events.jsonl")]
    assert "resume" in events


def test_the_best_model_is_kept_inside_the_checkpoints(tmp_path):
    model, _, state, loop = _run(tmp_path / "best", scores={1: 0.9, 2: 0.1, 3: 0.2})
    assert state.best["epoch"] == 1
    best = best_weights(loop)
    assert best["info"]["epoch"] == 1
    assert not torch.equal(best["trainable"]["weight"], model.weight.detach())  # epoch 1's weights, not the last


def test_a_non_finite_loss_is_refused_and_logged(tmp_path):
    with pytest.raises(NonFiniteLoss, match="at step 5"):
        _run(tmp_path / "nan", nan_at=5)
    events = read_events(tmp_path / "nan" / "events.jsonl")
    assert [e for e in events if e["event"] == "nonfinite_loss"][0]["step"] == 5


def test_resume_when_every_checkpoint_fails_its_manifest_says_so_and_starts_over(tmp_path):
    """#46 (6): with one damaged checkpoint --resume falls back to the one before; with all of them damaged it starts
    over from step 0, and the log and the events name every checkpoint it skipped."""
    straight, _, _, _ = _run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "bad", crash_at=7)
    ckpts = sorted((tmp_path / "bad" / "checkpoints").glob("step-*"))
    assert len(ckpts) >= 1
    for c in ckpts:
        with open(c / "trainable.pt", "ab") as f:
            f.write(b"x")
    lines: list[str] = []
    resumed, stage, state, _ = _run(tmp_path / "bad", resume=True, lines=lines)
    assert len(stage.seen) == 12 and state.step == 12  # every step again, from step 0
    assert torch.equal(straight.weight, resumed.weight)
    events = read_events(tmp_path / "bad" / "events.jsonl")
    skipped = [e["checkpoint"] for e in events if e["event"] == "checkpoint_skipped"]
    assert sorted(skipped) == [c.name for c in ckpts]
    assert any(f"none of the {len(ckpts)} checkpoint(s) is intact; starting over from step 0" in x for x in lines)
    assert any(f"checkpoint {ckpts[0].name} skipped" in x for x in lines)
