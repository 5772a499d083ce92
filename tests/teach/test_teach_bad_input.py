"""Hostile input against the teacher stage: the score cache, degenerate training data. Each test names its issue
(#14, #26)."""

from pathlib import Path

import pytest

from conftest import assert_usage_error, run_in_process
from crossdistill.core.errors import UsageError


# --------------------------------------------------------------------------- 4: the score cache
def test_score_cache_keeps_teachers_apart_and_rebuilds_a_corrupt_file(tmp_path):
    """Issue #14."""
    import numpy as np

    from crossdistill.teachers.cache import ScoreCache

    path = tmp_path / "scores.sqlite"
    a = ScoreCache(path, "teacher-a")
    a.put([("q", "p")], np.array([3.0]))
    a.close()
    b = ScoreCache(path, "teacher-b")
    assert np.isnan(b.get([("q", "p")])).all()  # teacher B never receives teacher A's score
    b.close()
    assert ScoreCache(path, "teacher-a").get([("q", "p")]).tolist() == [3.0]
    for garbage in (b"not a database at all" * 100, b""):
        path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.write_bytes(garbage)
        with pytest.raises(UsageError, match="not a teacher-score cache"):  # at a user's path: refused, left as is
            ScoreCache(path, "teacher-a")
        assert path.read_bytes() == garbage
        said = []
        cache = ScoreCache(path, "teacher-a", log=said.append, owned=True)  # in the toolkit's own cache: rebuilt
        assert np.isnan(cache.get([("q", "p")])).all()
        cache.put([("q", "p")], np.array([1.0]))
        cache.close()
        assert said and "rebuilding" in said[0]
    with pytest.raises(UsageError, match="is a folder"):
        ScoreCache(tmp_path, "teacher-a")


def test_teacher_whose_negatives_all_equal_their_positives_is_refused(tmp_path, tiny_minilm):
    """Issue #14."""
    data = tmp_path / "d" / "same"
    data.mkdir(parents=True)
    rows = "anchor,positive,negative\n" + "".join(f"q{i},passage {i},passage {i}\n" for i in range(6))
    for split in ("train", "val"):
        (data / f"{split}.csv").write_text(rows)
    proc = run_in_process("train_teacher_model.py", "--model_name", tiny_minilm, "--data_root", tmp_path / "d", "--data_version",
                      "same", "--output_dir", tmp_path / "t", "--max_len", "32")
    assert_usage_error(proc, "every negative in the training data equals its positive")
    assert not (tmp_path / "t" / "done.json").exists()


# --------------------------------------------------------------------------- 7: the score cache
def test_score_cache_touches_only_its_own_files(tmp_path):
    """Issue #26."""
    import sqlite3

    import numpy as np

    from crossdistill.teachers.cache import ScoreCache

    thesis = tmp_path / "thesis.tex"
    thesis.write_text("my thesis")
    with pytest.raises(UsageError, match="not a teacher-score cache this toolkit wrote"):
        ScoreCache(thesis, "t")
    assert thesis.read_text() == "my thesis" and sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]
    mine = tmp_path / "mydata.db"
    db = sqlite3.connect(mine)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = mine.read_bytes()
    with pytest.raises(UsageError, match="other tables: people"):
        ScoreCache(mine, "t")
    assert mine.read_bytes() == before
    with pytest.raises(UsageError, match="not a regular file"):
        ScoreCache("/dev/null", "t")
    assert Path("/dev/null").exists() and not Path("/dev/null").is_file()
    # the toolkit's own file: created, reused, keeps teachers apart
    cache = tmp_path / "scores.sqlite"
    a = ScoreCache(cache, "teacher-a")
    a.put([("q", "p")], np.array([3.0]))
    a.close()
    assert np.isnan(ScoreCache(cache, "teacher-b").get([("q", "p")])).all()
    assert ScoreCache(cache, "teacher-a").get([("q", "p")]).tolist() == [3.0]
    # damaged: in the toolkit's own cache folder it is set aside and rebuilt; at a user's path it is refused as is
    cache.write_bytes(b"SQLite format 3\x00" + b"garbage" * 100)
    with pytest.raises(UsageError):
        ScoreCache(cache, "teacher-a")
    said = []
    rebuilt = ScoreCache(cache, "teacher-a", log=said.append, owned=True)
    assert np.isnan(rebuilt.get([("q", "p")])).all() and "rebuilding" in said[0]
    assert any(p.name.startswith("scores.sqlite.corrupt-") for p in tmp_path.iterdir())
    with pytest.raises(UsageError, match="is a folder"):
        ScoreCache(tmp_path, "teacher-a")
