"""Pieces of the training loop: optimizer, loss, jitted step, run checkpoints and logging."""
