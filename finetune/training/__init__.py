"""Training: the experiment config, the run directory on disk, batches, steps and the LoRA loop."""
