"""``prepare_data.py``'s settings, and the mining model every stage that mines shares."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import (
    AT_LEAST_1,
    NON_NEGATIVE,
    PROBABILITY,
    Config,
    DataLocation,
    Replaceable,
    Seeded,
    setting,
)

EASY_NEGATIVES = 3  # random negatives beside the mined ones when --random_negatives is left out


@dataclass(frozen=True, kw_only=True)
class Mining(Config):
    mining_model: str = setting("minilm-l6", "bi-encoder that ranks passages for model-mined negatives")


# --------------------------------------------------------------------------- prepare_data.py
@dataclass(frozen=True, kw_only=True)
class PrepareConfig(DataLocation, Seeded, Mining, Replaceable):
    """``prepare_data.py``'s settings."""

    source: str = setting(help="labelled data: a BEIR folder (or BEIR dataset name, online), a SQuAD/KorQuAD .json, "
                               "triplets or pairs as .csv/.tsv/.jsonl/.parquet, a `datasets` folder (save_to_disk) or, "
                               "online, a Hugging Face dataset id")
    source_type: str | None = setting(None, "override the detected source type",
                                      choices=["beir", "squad", "csv", "tsv", "jsonl", "parquet", "hf"])
    columns: str | None = setting(None, "map your column names: 'anchor=question,positive=answer[,negative=...]' "
                                        "(common names are recognised without it)")
    corpus: str | None = setting(None, "passages to mine negatives from and to rank val/test queries against: .jsonl, "
                                       ".csv/.tsv or .parquet with id and text, or a .txt with one passage per line")
    negatives: str = setting("bm25", "how negatives are mined (keep: the triplets' own negatives)",
                             choices=["bm25", "model", "random", "keep"])
    num_negatives: int = setting(4, "mined (hard) negatives per (query, positive)", check=AT_LEAST_1)
    random_negatives: int | None = setting(
        None, "extra random (easy) negatives per (query, positive), after the mined ones (default: "
              f"{EASY_NEGATIVES} with --negatives bm25/model, 0 with random/keep); a teacher trained from scratch on "
              "hard negatives alone learned far less "
              "here (docs/experiments.md, 'Teacher recipe')", check=NON_NEGATIVE)
    rank_window: str = setting("0:100", "START:END ranks of the miner's list to take negatives from")
    fn_margin: float | None = setting(None, "false-negative guard: skip candidates scoring >= (1 - margin) x the "
                                            "positive's score", check=PROBABILITY)
    same_group_negatives: str = setting("exclude", "SQuAD/KorQuAD: may a paragraph of the question's own article be its "
                                                   "negative?", choices=["exclude", "allow"])
    scored_queries: str = setting("any", "a scored source (teacher scores in the rows): 'any' = its scored queries are "
                                         "split like the rest (those in val/test never teach; the log counts them), "
                                         "'train' = every scored query trains, val and test come from unscored ones",
                                  choices=["any", "train"])
    val_fraction: float = setting(0.1, "share of queries (or articles) held out for val when the source has no val split",
                                  check=PROBABILITY)
    test_fraction: float = setting(0.1, "share held out for test when the source has no test split", check=PROBABILITY)

    @property
    def rank_range(self) -> tuple[int, int]:
        start, end = (int(x) for x in self.rank_window.split(":"))
        return start, end

    def resolve(self):
        if self.random_negatives is None:  # easy negatives beside mined hard ones; kept or random ones stay as asked
            return dataclasses.replace(self, random_negatives=EASY_NEGATIVES if self.negatives in ("bm25", "model") else 0)
        return self

    def check(self) -> None:
        try:
            start, end = self.rank_range
            if not 0 <= start < end:
                raise ValueError
        except ValueError:
            raise UsageError(f"--rank_window must be START:END with 0 <= START < END (got {self.rank_window!r}); "
                             "e.g. 0:100") from None
        if self.val_fraction + self.test_fraction >= 1:
            raise UsageError("--val_fraction + --test_fraction must be < 1; lower them")
        super().check()
