"""Shared test setup: float32 matmuls at full precision so parity tolerances mean something;
cost profiles (`decoding.profile`) go to a temporary folder, never the user's cache."""

import os
import tempfile

import jax

jax.config.update("jax_default_matmul_precision", "highest")
os.environ.setdefault("DSPARK_JAX_CACHE", tempfile.mkdtemp(prefix="dspark-jax-test-cache-"))
