"""Process groups for multi-process training: who am I (rank / world), launching N local processes
through torchrun, and moving JSON and tensors between ranks without pickle.

A process is a rank when a launcher (``torchrun``, ``accelerate launch``, SLURM's ``srun`` with the
same variables) set ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT``.
The backend is NCCL when the ranks use CUDA and gloo on CPU: never N silent independent processes.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

INIT_TIMEOUT = timedelta(hours=2)  # rank 0 may spend long in Prefect / fetching shards before the first collective


class WorldSizeError(ValueError):
    """The processes asked for are not the processes there are."""


class LaunchError(RuntimeError):
    """A multi-process run failed; the message is one line naming the failed rank when one said why."""

    one_line = True


@dataclass(frozen=True)
class World:
    """This process's place in the group (``size`` 1 and no group for a single process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" | "nccl" | None (no process group)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_world_size() -> int:
    """The world size a launcher put in the environment (1 when none did)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_world(*, expected: int | None = None, cpu: bool = False) -> World:
    """Join the process group the launcher described (idempotent), or :data:`SINGLE` without a launcher.

    expected: the world size the user asked for (``--nproc``); a different real size is an error naming
    both. cpu: use gloo even where CUDA is available."""
    size = launched_world_size()
    if expected is not None and expected != size:
        how = "this process was not started by a launcher (WORLD_SIZE is unset)" if "WORLD_SIZE" not in os.environ \
            else f"the launcher started WORLD_SIZE={size}"
        raise WorldSizeError(f"requested {expected} training processes but {how}")
    if size == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not cpu
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=INIT_TIMEOUT)
    if dist.get_world_size() != size or dist.get_rank() != rank:
        raise WorldSizeError(f"process group has world {dist.get_world_size()} / rank {dist.get_rank()}, the launcher "
                           f"said WORLD_SIZE={size} / RANK={rank}")
    return World(rank=rank, size=size, local_rank=local_rank, backend=dist.get_backend())


def _device(world: World) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if world.backend == "nccl" else torch.device("cpu")


def broadcast_json(obj: object, world: World, *, src: int = 0) -> object:
    """``obj`` (JSON-able, given on ``src``) on every rank, as UTF-8 bytes (no pickle)."""
    if not world.distributed:
        return obj
    device = _device(world)
    data = json.dumps(obj).encode() if world.rank == src else b""
    n = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(n, src)
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device) if world.rank == src \
        else torch.empty(int(n), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src)
    return json.loads(buf.cpu().numpy().tobytes().decode()) if world.rank != src else obj


def broadcast_tensors(tensors: dict[str, torch.Tensor] | None, world: World, *, src: int = 0) -> dict[str, torch.Tensor]:
    """The dict of CPU tensors given on ``src``, on every rank (names, shapes and dtypes go first as JSON)."""
    if not world.distributed:
        assert tensors is not None
        return tensors
    spec = broadcast_json({k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in tensors.items()}
                          if world.rank == src else None, world, src=src)
    device = _device(world)
    out = {}
    for name, (shape, dtype) in spec.items():  # type: ignore[union-attr]
        t = tensors[name].contiguous().to(device) if world.rank == src \
            else torch.empty(shape, dtype=getattr(torch, dtype), device=device)
        dist.broadcast(t, src)
        out[name] = t.cpu()
    return out


def gather_tensor(t: torch.Tensor, world: World) -> list[torch.Tensor]:
    """``t`` (same shape and dtype on every rank) from every rank, in rank order (all-gather)."""
    if not world.distributed:
        return [t]
    device = _device(world)
    parts = [torch.empty_like(t, device=device) for _ in range(world.size)]
    dist.all_gather(parts, t.to(device))
    return [p.cpu() for p in parts]


def all_sum(value: float, world: World) -> float:
    """Sum of a float over the ranks (float64)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_device(world))
    dist.all_reduce(t)
    return float(t)


def all_sum_tensor(t: torch.Tensor, world: World) -> torch.Tensor:
    """Elementwise sum of ``t`` (same shape and dtype on every rank) over the ranks, on ``t``'s device."""
    if not world.distributed:
        return t
    out = t.to(_device(world)).clone()
    dist.all_reduce(out)
    return out.to(t.device)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed launcher leaves no orphan ranks)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def launch_local(nproc: int, argv: Sequence[str], *, on_line: Callable[[str], None],
                 env: dict[str, str] | None = None) -> int:
    """Run ``python -m torch.distributed.run --standalone --nproc-per-node nproc ARGV`` (torchrun on this
    machine, a free rendezvous port), hand every output line of every rank to ``on_line``, return the exit
    code. torchrun stops all ranks when one fails; the launcher dies with this process, the ranks with it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}, preexec_fn=die_with_parent)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
