"""Join several shard-aligned artifacts by key, one shard at a time (memory stays flat)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage import Artifact
from storage.shardmap import Sample, read_shard


@dataclass
class Joined:
    """One key's members from every joined artifact: ``arrays["features"]["vision.npy"]``."""

    key: str
    meta: dict[str, Any]
    parts: dict[str, Sample] = field(default_factory=dict)

    def has(self, part: str, suffix: str) -> bool:
        return part in self.parts and suffix in self.parts[part].members

    def array(self, part: str, suffix: str) -> np.ndarray:
        return self.parts[part].array(suffix)


def join_shard(arts: Mapping[str, Artifact | None], shard: str, *, primary: str) -> list[Joined]:
    """Samples of ``shard`` in the ``primary`` artifact, with the same keys' members from the others.

    ``None`` artifacts are skipped (optional inputs). Keys missing in a secondary artifact (e.g. a
    failed row there) simply lack that part; callers decide what that means.
    """
    loaded = {name: {s.key: s for s in read_shard(art, shard)} for name, art in arts.items() if art is not None}
    out = []
    for key, sample in sorted(loaded[primary].items()):
        j = Joined(key, dict(sample.meta))
        for name, samples in loaded.items():
            if key in samples:
                j.parts[name] = samples[key]
        out.append(j)
    return out
