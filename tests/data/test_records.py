"""One record per query, grouped once (issue #37): the records of a prepared version give the teacher's groups, the
student's candidate lists and the val pool exactly as the row-by-row groupings they replaced."""

import pandas as pd

from crossdistill.data.eval_sets import TripletPool
from crossdistill.data.records import QueryRecord, group_rows
from crossdistill.data.versions import read_triplets


def test_records_keep_first_seen_order_and_each_text_once():
    df = pd.DataFrame({"anchor": ["q1", "q1", "q1", "q2", "q2"], "positive": ["a", "a", "b", "c", "c"],
                       "negative": ["x", "y", "x", "x", "c"]})
    assert group_rows(df) == [QueryRecord("q1", ["a", "b"], ["x", "y"], [(0, 0), (0, 1), (1, 0)]),
                              QueryRecord("q2", ["c"], ["x", "c"], [(0, 0), (0, 1)])]
    q2 = group_rows(df)[1]
    assert q2.negatives_of(0) == ["x"]  # a positive is never its own negative
    pairs = group_rows(df[["anchor", "positive"]])  # pairs: positives only
    assert [(r.query, r.pos, r.neg) for r in pairs] == [("q1", ["a", "b"], []), ("q2", ["c"], [])]


def test_records_reproduce_the_row_groupings_on_a_prepared_version(scifact_version):
    root, v = scifact_version
    df = read_triplets(root / v / "train.csv")
    records = group_rows(df)
    assert len(records) == df["anchor"].nunique() and sum(len(r.rows) for r in records) == len(df)
    # the teacher's groups: (anchor, positive) -> negatives, first seen over the rows
    groups: dict = {}
    for a, p, n in df.itertuples(index=False):
        negs = groups.setdefault((a, p), [])
        if n not in negs and n != p:
            negs.append(n)
    assert [(r.query, p, r.negatives_of(i)) for r in records for i, p in enumerate(r.pos)] == \
        [(a, p, negs) for (a, p), negs in groups.items()]
    # the pool: distinct passages (positives, then negatives) and one triplet per row, in row order
    pool = TripletPool.from_df(df)
    passages = list(dict.fromkeys(list(df["positive"]) + list(df["negative"])))
    assert pool.passages == passages and pool.queries == list(dict.fromkeys(df["anchor"]))
    where = {p: i for i, p in enumerate(passages)}
    assert pool.triplets == [(pool.queries.index(a), where[p], where[n]) for a, p, n in df.itertuples(index=False)]
