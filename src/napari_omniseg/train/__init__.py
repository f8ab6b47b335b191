"""Training: patch banks, augmentation, losses and one loop with progress / stop / checkpoints."""
