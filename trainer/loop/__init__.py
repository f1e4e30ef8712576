"""The training loop and what it is made of (TensorFlow is imported from here on)."""
