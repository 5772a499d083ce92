"""Figures of the evaluation (matplotlib, Agg backend, English labels that any font renders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def analysis_figure(pos: np.ndarray, neg: np.ndarray, stats: dict, path: Path, title: str) -> None:
    """The original's four panels: score distributions, margin histogram, box plot, uniformity bars."""
    plt = _plt()
    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    bins = np.linspace(0, 1, 51)
    a = ax[0, 0]
    a.hist(pos, bins=bins, alpha=0.6, label=f"positive (mean {pos.mean():.3f})", color="tab:green")
    a.hist(neg, bins=bins, alpha=0.6, label=f"negative (mean {neg.mean():.3f})", color="tab:red")
    a.axvline(0.15, color="k", ls="--", lw=1, label="target: negatives <= 0.15")
    a.set(title="Normalised score distributions", xlabel="(cos + 1) / 2", ylabel="pairs")
    a.legend(fontsize=9)
    a = ax[0, 1]
    margin = pos - neg
    a.hist(margin, bins=50, color="tab:blue", alpha=0.8)
    a.axvline(margin.mean(), color="tab:blue", lw=2, label=f"mean margin {margin.mean():.3f}")
    a.axvline(0.7, color="k", ls="--", lw=1, label="target margin 0.7")
    a.axvline(0, color="gray", lw=1)
    a.set(title=f"Margin (positive - negative); accuracy {stats['accuracy']:.3f}", xlabel="margin", ylabel="triplets")
    a.legend(fontsize=9)
    a = ax[1, 0]
    a.boxplot([pos, neg, margin], showfliers=False)
    a.set_xticks([1, 2, 3], ["positive", "negative", "margin"])
    a.set(title="Score box plot (whiskers 1.5 IQR, outliers hidden)", ylabel="score")
    a.grid(axis="y", alpha=0.3)
    a = ax[1, 1]
    u = stats["uniformity"]
    vals = [u["positive_variance"], u["negative_variance"], u["all_variance"]]
    bars = a.bar(["positive", "negative", "all"], vals, color=["tab:green", "tab:red", "tab:gray"])
    a.bar_label(bars, fmt="%.4f")
    a.set(title="Uniformity (score variance)", ylabel="variance")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def comparison_figure(pos: np.ndarray, neg: np.ndarray, table: dict[str, dict], path: Path,
                      teacher_vs_student: tuple[np.ndarray, np.ndarray, np.ndarray] | None, scope: str) -> None:
    """ROC curve, retrieval comparison (nDCG@10, MRR@10, Recall@10 per system) and teacher-vs-student scores."""
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    n = 3 if teacher_vs_student is not None else 2
    fig, ax = plt.subplots(1, n, figsize=(6.5 * n, 5.5))
    labels = np.concatenate([np.ones_like(pos), np.zeros_like(neg)])
    fpr, tpr, _ = roc_curve(labels, np.concatenate([pos, neg]))
    ax[0].plot(fpr, tpr, lw=2, label=f"student (AUC {auc(fpr, tpr):.3f})")
    ax[0].plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax[0].set(title="ROC: positive vs negative pairs", xlabel="false positive rate", ylabel="true positive rate")
    ax[0].legend(loc="lower right")
    metrics = ["ndcg@10", "mrr@10", "recall@10"]
    systems = list(table)
    width = 0.8 / max(len(systems), 1)
    x = np.arange(len(metrics))
    for i, name in enumerate(systems):
        vals = [table[name].get(m, np.nan) for m in metrics]
        bars = ax[1].bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
        ax[1].bar_label(bars, fmt="%.3f", fontsize=7, rotation=90, padding=2)
    ax[1].set_xticks(x, metrics)
    ax[1].set_ylim(0, 1.12)
    ax[1].set(title=f"Retrieval over the {scope}", ylabel="score")
    ax[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2)
    if teacher_vs_student is not None:
        t, s, is_pos = teacher_vs_student
        ax[2].scatter(t[is_pos], s[is_pos], s=8, alpha=0.5, color="tab:green", label="labelled positive")
        ax[2].scatter(t[~is_pos], s[~is_pos], s=8, alpha=0.3, color="tab:red", label="other candidate")
        corr = np.corrcoef(t, s)[0, 1] if len(t) > 1 else float("nan")
        ax[2].set(title=f"Teacher vs student on reranked pairs (Pearson r {corr:.2f})",
                  xlabel="teacher probability (sigmoid)", ylabel="student (cos + 1) / 2")
        ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def matryoshka_figure(by_dim: dict[str, dict], beside: dict[str, dict], path: Path, scope: str) -> None:
    """nDCG@10 (and MRR@10) of a Matryoshka student against its embedding dimension, with the full-size student and
    the baselines (BM25, the starting model) as horizontal lines."""
    plt = _plt()
    dims = sorted(int(d) for d in by_dim)
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for metric, style in (("ndcg@10", "o-"), ("mrr@10", "s--")):
        ax.plot(dims, [by_dim[str(d)][metric] for d in dims], style, label=f"student cut to D: {metric}")
    for i, (name, r) in enumerate(beside.items()):
        if "ndcg@10" in r:
            ax.axhline(r["ndcg@10"], color=f"C{i + 2}", lw=1, ls=":", label=f"{name}: nDCG@10 {r['ndcg@10']:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set(title=f"Matryoshka: retrieval over the {scope} by embedding dimension", xlabel="dimensions kept",
           ylabel="score")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

