"""vta_core: the torch core (no Prefect): geometry, audio front-end, encoders, conditioning, UNet,
VAE, vocoder, training, sampling, metrics.

OpenMP threads sleep instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``, unless the
user set it): on a small machine shared with FFmpeg, a Prefect server or another process, spinning
threads made small convolutions ~15x slower (measured on 2 cores: 5.6 s vs 0.4 s per tiny-VAE step).
This must happen before torch loads its OpenMP runtime, hence here.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
