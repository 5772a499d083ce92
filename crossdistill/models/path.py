"""Print where a model is on this machine, so the same model can be handed to other tools.

An offline alias (``minilm-l6``, ``multilingual-e5-small``, ``nomic-embed-text-v1.5``) is built on first use into
``$CROSSDISTILL_CACHE`` (default ``~/.cache/crossdistill``); a folder is printed as it is; a hub id is looked up in
the local hub cache. The folder is a sentence-transformers model: ``SentenceTransformer(folder)``, FlagEmbedding's
``FlagModel(folder)``, or ``transformers.AutoModel.from_pretrained(folder)`` read it.

  python -m crossdistill.models.path nomic-embed-text-v1.5
  crossdistill-model-path minilm-l6
"""

from __future__ import annotations

import sys

from crossdistill.core.errors import UsageError, run_cli


def model_path(name: str) -> str:
    """The local folder of ``name`` (an alias built if needed, a folder, or a cached hub snapshot)."""
    from pathlib import Path

    from crossdistill.models.resolve import hub_snapshot, resolve_model

    resolved = resolve_model(name)
    if Path(resolved.path).is_dir():
        return str(Path(resolved.path).resolve())
    return hub_snapshot(resolved.name, "model")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1 or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            return
        raise UsageError("pass one model name: an alias (minilm-l6, multilingual-e5-small, nomic-embed-text-v1.5), a "
                         "folder or a hub id; e.g. python -m crossdistill.models.path minilm-l6")
    print(model_path(argv[0]))


def run() -> None:
    """``python -m crossdistill.models.path``, ``crossdistill-model-path``."""
    run_cli(main)


if __name__ == "__main__":
    run()
