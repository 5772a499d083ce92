"""Teachers: every kind of teacher behind one interface (a cross-encoder, a bi-encoder, a scores file, BM25), the one
:class:`~crossdistill.teachers.ensemble.Teachers` object both stages, the guard and the evaluation score with, their
caches (scores and embeddings computed once) and the fusion of their logits with other rankers'."""
