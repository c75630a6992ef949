"""Worker set-up for the Dask runner; imports nothing of ours, so a worker can load it first.

A Dask worker puts its scratch folder at the front of ``sys.path`` and spills to ``{scratch}/storage``:
with the project installed editable, ``import storage`` would then find that folder as an empty
namespace package instead of our ``storage`` package. The plugin takes the scratch folder off the path
(we never upload code to workers) and forgets any such namespace import. It also gives OpenCV one
thread per worker process (OpenCV ignores ``OMP_NUM_THREADS``: N workers would run N×N threads).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

PACKAGES = ("storage", "vta_core", "stages", "flows", "cli")


class ProjectImports(WorkerPlugin):
    """Registered by flows/engine.py on every worker of the cluster it uses (idempotent)."""

    idempotent = True
    name = "vta-project-imports"

    def setup(self, worker: Any) -> None:
        while worker.local_directory in sys.path:
            sys.path.remove(worker.local_directory)
        for name in PACKAGES:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__file__", None) is None:  # a namespace, not ours
                del sys.modules[name]
        importlib.invalidate_caches()
        try:
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # a worker without OpenCV runs none of our CPU stages
            pass
