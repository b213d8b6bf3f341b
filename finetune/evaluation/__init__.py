"""Evaluation: validation loss, generation and classification metrics, loss curves."""
