"""Models: base models, the one chat template used at training and serving, merge and export."""
