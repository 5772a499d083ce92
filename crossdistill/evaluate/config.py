"""``evaluate_final_model.py``'s settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from crossdistill.core.errors import UsageError
from crossdistill.core.settings import AT_LEAST_1, MAX_LEN, DataLocation, Replaceable, setting


# --------------------------------------------------------------------------- evaluate_final_model.py
@dataclass(frozen=True, kw_only=True)
class EvalConfig(DataLocation, Replaceable):
    """``evaluate_final_model.py``'s settings."""

    model_path: str = setting(help="student folder (or alias/hub id of any bi-encoder)")
    test_data: str | None = setting(None, "test CSV with anchor,positive,negative (default: <data_root>/<data_version>/"
                                          "test.csv when --data_version is given)")
    output_dir: str = setting(help="folder for bi_encoder_evaluation_results.json, report.md and the figures")
    batch_size: int = setting(32, "texts per encoding batch", check=AT_LEAST_1)
    beir_dir: str | None = setting(None, "BEIR folder: also retrieve over its full corpus")
    split: str = setting("test", "qrels split of --beir_dir")
    corpus: str | None = setting(None, "your corpus (.jsonl/.csv/.tsv/.parquet with id and text, or .txt): retrieve the "
                                       "test queries over it; with --queries and --qrels, or the test CSV's queries")
    queries: str | None = setting(None, "with --corpus: your queries (.jsonl/.csv/.tsv/.parquet with id and text)")
    qrels: str | None = setting(None, "with --corpus and --queries: relevance pairs (query-id, corpus-id[, score]) as "
                                      ".tsv/.csv/.jsonl")
    base_model: str | None = setting(None, "baseline bi-encoder (e.g. the student before distillation)")
    bm25: bool = setting(False, "add BM25 as a baseline")
    teacher_path: str | None = setting(None, "add the teacher reranking the student's top-k")
    rerank_k: int = setting(30, "with --teacher_path: how many of the student's top passages the teacher reranks",
                            check=AT_LEAST_1)
    max_len: int | None = setting(None, "override the model's max sequence length (queries and passages; default: the "
                                        "lengths the student was trained at, else the model's own)", check=MAX_LEN)
    query_max_len: int | None = setting(None, "tokens kept of each query (default: --max_len, else the student's "
                                              "training --query_max_len, else the model's own)", check=MAX_LEN)
    passage_max_len: int | None = setting(None, "tokens kept of each passage (default: --max_len, else the student's "
                                                "training --passage_max_len, else the model's own)", check=MAX_LEN)
    truncate_dim: int | None = setting(None, "cut the student's embeddings to their first D dimensions (re-normalised), "
                                             "as SentenceTransformer(folder, truncate_dim=D) does; without it a "
                                             "Matryoshka student is also measured at each of its trained dimensions",
                                       check=(lambda v: 8 <= v <= 65536, "between 8 and 65536"))
    num_samples: int = setting(8, "sample pairs printed and put in the report", check=AT_LEAST_1)
    backend: str = setting("torch", "how the student runs: its PyTorch weights, or the ONNX model (fp32 or int8) that "
                                    "export_student.py / --export wrote into it", choices=["torch", "onnx", "onnx-int8"])

    def resolve(self):
        if self.test_data is None and self.data_version:
            from crossdistill.data.versions import DataVersion

            return dataclasses.replace(self, test_data=str(DataVersion.of(self).folder / "test.csv"))
        return self

    def check(self) -> None:
        if self.test_data is None:
            raise UsageError("pass --test_data (a test CSV) or --data_version (a prepared version's test.csv)")
        if (self.queries or self.qrels) and not (self.corpus and self.queries and self.qrels):
            raise UsageError("--queries and --qrels go together with --corpus (all three), or leave them out")
        if self.corpus and self.beir_dir:
            raise UsageError("pass one full corpus: --beir_dir or --corpus, not both")
        super().check()
