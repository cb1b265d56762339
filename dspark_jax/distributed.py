"""Multi-process JAX: one `jax.distributed.initialize` call before any device is touched.

Every host of a multi-host slice runs the same `dspark-jax` command; the processes then see one
global device mesh (`sharding.make_mesh` over `jax.devices()`) and jitted steps run SPMD across
them. On Cloud TPU VMs (and SLURM, and the other clusters JAX knows) the coordinator, process
count and process id are detected from the environment: `--distributed` alone. Elsewhere the
three values are given explicitly, the same on every process except the id.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
  enabled: bool = False  # --distributed: initialise, detecting the cluster if nothing is given
  coordinator: str | None = None  # host:port of process 0
  num_processes: int | None = None
  process_id: int | None = None

  def check(self) -> DistributedArgs:
    """Self, validated. ValueError on a partial or inconsistent explicit setting."""
    explicit = (self.coordinator, self.num_processes, self.process_id)
    given = [x is not None for x in explicit]
    if any(given) and not all(given):
      raise ValueError(
        "give --coordinator, --num-processes and --process-id together (or --distributed "
        "alone, to detect them on Cloud TPU / SLURM)"
      )
    if all(given):
      if self.num_processes < 1 or not 0 <= self.process_id < self.num_processes:
        raise ValueError(
          f"--process-id must be in [0, --num-processes), got {self.process_id} of "
          f"{self.num_processes}"
        )
      if ":" not in self.coordinator:
        raise ValueError(f"--coordinator must be host:port, got {self.coordinator!r}")
    return self

  @property
  def wanted(self) -> bool:
    return self.enabled or self.coordinator is not None


def initialize(args: DistributedArgs) -> bool:
  """Calls `jax.distributed.initialize` when asked to; returns whether it did."""
  args = args.check()
  if not args.wanted:
    return False
  import jax

  jax.distributed.initialize(
    coordinator_address=args.coordinator,
    num_processes=args.num_processes,
    process_id=args.process_id,
  )
  return True
