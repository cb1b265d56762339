"""dspark-jax: speculative decoding with DSpark drafters in JAX."""

__version__ = "0.1.0"
