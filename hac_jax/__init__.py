"""hac-jax: machine unlearning in hyperbolic (MERU) and Euclidean (CLIP) image-text models."""

__version__ = "0.1.0"
