"""Training pieces: losses and optimizers."""
