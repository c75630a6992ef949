"""The artifact store: versions, manifests, commit markers, lineage, fsspec I/O."""

from storage.fs import resolve_root
from storage.manifest import failed_row, filtered_row, ok_row
from storage.store import Artifact, ArtifactStore, ArtifactWriter, DamagedArtifactError, StageSpec, local_copy

__all__ = [
    "Artifact", "ArtifactStore", "ArtifactWriter", "DamagedArtifactError", "StageSpec", "failed_row", "filtered_row", "local_copy", "ok_row",
    "resolve_root",
]
