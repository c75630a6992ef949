"""The speed settings of generation and training in one object, :class:`Acceleration`, and what applies them.

- ``precision``: ``bf16`` runs the UNet, VAE and vocoder forwards under bf16 autocast (the scheduler
  arithmetic, the guidance sum and the latents stay fp32: ``vta_core.sampling``); ``fp32`` runs them as is.
- ``channels_last``: NHWC weights for the UNet and the VAE (tensor-core convolutions on CUDA).
- ``compile``: ``torch.compile`` of the denoiser forward (UNet + condition concat), static shapes
  (``dynamic=False``): one graph per (batch, latent length) bucket, compiled on its first call. On CUDA the
  mode is ``reduce-overhead``, i.e. CUDA graphs: a step's ~1,000 kernel launches become one replay.
  ``compile_backend`` (default inductor) exists for tests: ``aot_eager`` traces the same graph without
  code generation.
- ``tf32``: TF32 matmuls/convolutions for fp32 work on CUDA (``torch.backends.*.allow_tf32``).

Attention runs through PyTorch's scaled_dot_product_attention (diffusers' ``AttnProcessor2_0``, set here
explicitly so a model loaded with another processor is switched back). :meth:`Acceleration.auto` is what a
device gets by default: bf16 + channels-last + TF32 on CUDA (compile is opt-in there: its first call costs
tens of seconds); on CPU fp32 eager, or bf16 where the CPU computes it natively (AVX512-BF16/AMX).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16")
ACCEL_NAMES = ("auto", "eager", "fast")  # what --accel accepts


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16, from /proc/cpuinfo on Linux):
    bf16 autocast is then faster than fp32; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@dataclass(frozen=True)
class Acceleration:
    """How generation (and the training loop) run; the defaults are the eager fp32 reference path."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def auto(cls, device: str | torch.device) -> Acceleration:
        """The default for ``device``: CUDA -> bf16, channels-last, TF32 (no compile); CPU -> fp32 eager, or
        bf16 on CPUs with native bf16."""
        if torch.device(device).type == "cuda":
            return cls(precision="bf16", channels_last=True, tf32=True)
        return cls(precision="bf16" if cpu_has_native_bf16() else "fp32")

    @classmethod
    def fast(cls, device: str | torch.device) -> Acceleration:
        """Everything on: :meth:`auto` plus ``torch.compile`` (CUDA graphs on CUDA)."""
        a = cls.auto(device)
        return cls(precision=a.precision, channels_last=a.channels_last, compile=True, tf32=a.tf32)

    @classmethod
    def named(cls, name: str, device: str | torch.device) -> Acceleration:
        """``auto`` | ``eager`` (fp32, nothing else) | ``fast`` (:meth:`fast`)."""
        if name == "auto":
            return cls.auto(device)
        if name == "eager":
            return cls()
        if name == "fast":
            return cls.fast(device)
        raise ValueError(f"unknown acceleration {name!r}; choose one of {ACCEL_NAMES}")

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "channels_last": self.channels_last, "compile": self.compile,
                "compile_backend": self.compile_backend, "tf32": self.tf32}


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions on CUDA (process-wide, as torch offers it)."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def use_sdpa(unet: torch.nn.Module) -> None:
    """Every attention layer on PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def compile_mode(device: torch.device) -> str | None:
    """``reduce-overhead`` (CUDA graphs) on CUDA; inductor's default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else None


def accelerate_denoiser(model: torch.nn.Module, accel: Acceleration) -> torch.nn.Module:
    """``model`` (a VTAModel, on its device) set up for ``accel``; returns what to call for denoising.

    With ``compile`` the result is ``torch.compile(model)``: it shares the weights and forwards attribute
    access (``config``, ``condition``) to ``model``; only ``forward`` runs compiled. Call
    :func:`step_begin` before each denoiser call (CUDA graphs reuse their output buffers).
    """
    device = next(model.parameters()).device
    set_tf32(accel.tf32)
    use_sdpa(model.unet)
    if accel.channels_last:
        model.unet.to(memory_format=torch.channels_last)
    if not accel.compile:
        return model
    return torch.compile(model, mode=compile_mode(device) if accel.compile_backend == "inductor" else None,
                         backend=accel.compile_backend, dynamic=False)


def accelerate_vae(vae: torch.nn.Module, accel: Acceleration) -> torch.nn.Module:
    """The VAE with channels-last weights when asked (its decode runs under the precision's autocast)."""
    if accel.channels_last:
        vae.to(memory_format=torch.channels_last)
    return vae


def step_begin() -> None:
    """Mark a new denoiser step for CUDA graphs (their outputs of the previous step may be overwritten);
    a no-op without them."""
    torch.compiler.cudagraph_mark_step_begin()
