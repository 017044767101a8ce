"""Training and evaluation: configuration, data, the training loop and segmentation metrics."""
