"""Data: sources (BEIR, SQuAD/KorQuAD, your own tables), prepared versions (the triplet CSVs and corpus), negative
mining, prepare_data.py's logic and the per-query candidate lists. Imports core and models."""
