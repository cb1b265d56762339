"""The one place that decides between the Pallas kernels and their XLA references.

Pallas runs compiled on TPU and GPU, and in interpret mode on CPU only when asked (tests, where
it checks the kernel against the reference); otherwise CPU uses the XLA reference. Top-k / top-p
are applied by the caller before (`decoding.verify` filters the logits, then verifies at
temperature 1), so both implementations only ever see temperature.
"""

from __future__ import annotations

import jax

from dspark_jax.kernels import ragged_attention as ragged_kernel
from dspark_jax.kernels import reference
from dspark_jax.kernels import verify as verify_kernel


def use_pallas(platform: str | None = None, *, force_interpret: bool = False) -> tuple[bool, bool]:
  """(use the kernel, in interpret mode) for a platform (default: JAX's default backend)."""
  platform = platform or jax.default_backend()
  if platform in ("tpu", "gpu", "cuda", "rocm"):
    return True, False
  return force_interpret, True


def verify_flat(
  *args,
  max_len: int,
  temperature: float,
  top_k: int = 0,
  top_p: float = 1.0,
  force_interpret: bool = False,
  block_v: int = 512,
):
  """Flat-buffer verification; arguments as `reference.ref_verify_flat`."""
  kernel, interpret = use_pallas(force_interpret=force_interpret)
  if top_k or top_p < 1.0:
    raise NotImplementedError(
      "top-k/top-p verification on the flat buffer is not implemented yet; use "
      "decoding.verify.verify (the padded XLA path), which supports them"
    )
  fn = verify_kernel.verify_flat if kernel else reference.ref_verify_flat
  return fn(*args, max_len=max_len, temperature=temperature, block_v=block_v, interpret=interpret)


def ragged_attention(*args, force_interpret: bool = False, **kwargs):
  """Ragged-row attention over the KV cache; arguments as `reference.ref_ragged_attention`.

  The Pallas kernel on TPU/GPU (and in interpret mode when forced, for tests); the jnp
  reference elsewhere. The model's CPU decode path does not come through here: it uses
  `models.layers.attend_cache_prefix`, the XLA formulation that measures fastest on CPU
  (BENCHMARKS.md).
  """
  kernel, interpret = use_pallas(force_interpret=force_interpret)
  if kernel:
    return ragged_kernel.ragged_attention(*args, interpret=interpret, **kwargs)
  kwargs.pop("block_s", None)
  return reference.ref_ragged_attention(*args, **kwargs)
