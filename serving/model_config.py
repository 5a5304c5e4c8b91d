"""Which models to serve from where, and which of their versions."""

import dataclasses
from typing import List, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
  """TF Serving's ServableVersionPolicy: latest N, specific, or all."""
  kind: str = 'latest'           # latest | specific | all
  latest: int = 1
  specific: Tuple[int, ...] = ()

  def select(self, available: Sequence[int]) -> List[int]:
    if self.kind == 'all':
      return sorted(available)
    if self.kind == 'specific':
      return sorted(v for v in available if v in self.specific)
    return sorted(available)[-self.latest:]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  name: str
  base_path: str
  policy: VersionPolicy = VersionPolicy()
  # label -> version (TF Serving's version_labels).
  labels: Tuple[Tuple[str, int], ...] = ()
