"""Scaling-law fitting (numpy/scipy/matplotlib only, never JAX): runs tables, laws, fits, predictions."""
