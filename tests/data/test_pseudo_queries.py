"""Pseudo-queries cut from real SciFact passages (issue #35's lever "the teacher labels what no one labelled")."""

import json
import random

from conftest import SCIFACT
from crossdistill.data.pseudo_queries import MAX_WORDS, MIN_WORDS, cut_query, pseudo_query_lists, split_sentences


def _passages(n=400):
    out = []
    with open(SCIFACT / "corpus.jsonl") as f:
        for line in f:
            r = json.loads(line)
            out.append(f"{r['title']}. {r['text']}")
            if len(out) == n:
                break
    return out


def test_sentences_split_after_their_end_marks_in_english_and_korean():
    assert split_sentences("Cells divide. Why? Nobody knows!") == ["Cells divide.", "Why?", "Nobody knows!"]
    assert split_sentences("서울은 한국의 수도이다. 부산은 항구 도시이다.") == ["서울은 한국의 수도이다.", "부산은 항구 도시이다."]
    assert split_sentences("  p = 0.05 was the threshold.  ") == ["p = 0.05 was the threshold."]  # no split inside 0.05


def test_a_cut_query_is_one_sentence_of_the_passage_and_the_rest_keeps_the_others():
    rng = random.Random(0)
    passage = "Short. This sentence has exactly seven words in it. Another one follows here with words. End."
    query, rest = cut_query(passage, rng)
    assert query in ("This sentence has exactly seven words in it.", "Another one follows here with words.")
    assert query not in rest and rest.startswith("Short.") and rest.endswith("End.")
    assert cut_query("One sentence only with quite a few words in it.", rng) is None
    assert cut_query("Too. Short. All.", rng) is None


def test_pseudo_lists_on_real_passages():
    passages = _passages()
    lists, stats = pseudo_query_lists(passages, 50, 4, seed=42)
    assert stats == {"requested": 50, "pseudo_queries": 50, "passages_without_a_query": stats["passages_without_a_query"]}
    assert len(lists) == 50 and len({c.query for c in lists}) == 50
    by_rest = {}
    for c in lists:
        assert len(c.passages) == 4 and c.positive == [False] * 4  # the teacher decides; no label is claimed
        assert MIN_WORDS <= len(c.query.split()) <= MAX_WORDS
        source = [p for p in passages if c.query in p]
        assert source, c.query
        assert c.query not in c.passages[0]                     # the remainder lost the sentence
        assert all(p in passages for p in c.passages[1:])        # negatives come from the pool
        assert not any(c.query in p for p in c.passages[1:])     # never the source passage itself
        by_rest[c.query] = c.passages
    again, _ = pseudo_query_lists(list(reversed(passages)), 50, 4, seed=42)
    assert {c.query: c.passages for c in again} == by_rest      # deterministic, whatever the input order
    other, _ = pseudo_query_lists(passages, 50, 4, seed=43)
    assert {c.query for c in other} != set(by_rest)


def test_labelled_queries_are_never_cut_again_and_a_large_request_is_capped():
    passages = _passages(30)
    lists, _ = pseudo_query_lists(passages, 5, 3, seed=1)
    known = {lists[0].query}
    again, _ = pseudo_query_lists(passages, 5, 3, seed=1, known_queries=known)
    assert lists[0].query not in {c.query for c in again}
    capped, stats = pseudo_query_lists(passages, 10_000, 3, seed=1)
    assert stats["pseudo_queries"] == len(capped) <= 30
    assert stats["pseudo_queries"] + stats["passages_without_a_query"] == 30
    assert pseudo_query_lists(passages, 0, 3, seed=1) == ([], {"requested": 0, "pseudo_queries": 0,
                                                              "passages_without_a_query": 0})
