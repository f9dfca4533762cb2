"""Layer 6, the application: the training loop, the CLI, checkpoints, datasets, demos and plots."""
