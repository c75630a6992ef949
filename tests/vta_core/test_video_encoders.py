"""vta_core/video_encoders.py: ViViT and V-JEPA 2 through transformers' real loading path, each a tiny random
model saved with ``save_pretrained`` (config.json + model.safetensors, the released format) and loaded back
through its ``transformers:ARCH:FOLDER`` spec; per-frame output aligned with the input frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from vta_core.vision import encode_clips, load_vision_encoder, parse_spec


def _tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "vivit":  # 4 input frames, tubelets of 2 frames x 8 x 8 px -> 2 time slots
        return transformers.VivitModel(transformers.VivitConfig(
            image_size=32, num_frames=4, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=1,
            num_attention_heads=2, intermediate_size=64))
    return transformers.VJEPA2Model(transformers.VJEPA2Config(
        crop_size=32, frames_per_clip=4, tubelet_size=2, patch_size=8, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, mlp_ratio=2.0, pred_hidden_size=16, pred_num_hidden_layers=1,
        pred_num_attention_heads=2, pred_num_mask_tokens=2))


@pytest.fixture(scope="module", params=["vivit", "vjepa2"])
def saved(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = _tiny(request.param)
    model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file()
    return request.param, folder, model.eval()


def _frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 48, 3), dtype=np.uint8)


def test_the_saved_model_loads_through_its_spec_and_gives_per_frame_embeddings(saved):
    arch, folder, model = saved
    enc = load_vision_encoder(f"transformers:{arch}:{folder}")
    assert enc.spec == f"transformers:{arch}:{folder}" and enc.dim == 32 and enc.per_clip
    frames = _frames(6, 0)
    out = enc.encode_frames(frames)
    assert out.shape == (6, 32) and out.dtype == np.float32 and np.isfinite(out).all()
    # input frames: clip frames 0, 2, 3, 5; clip frames 0-2 fall in the first tubelet, 3-5 in the second
    assert np.array_equal(enc.slot_index(6), [0, 0, 0, 1, 1, 1]) and np.array_equal(enc.input_index(6), [0, 2, 3, 5])
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[3], out[5]) and not np.allclose(out[0], out[3])
    # the loaded weights are the saved ones: the same numbers as the in-memory model on the same input
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = enc.features(x)
        enc.model = model
        assert torch.allclose(enc.features(x), ref, atol=1e-6)
    assert np.allclose(enc.encode_frames(frames), out)  # deterministic
    assert enc.encode_frames(frames[:0]).shape == (0, 32)


def test_clips_are_encoded_one_by_one_and_features_are_differentiable(saved):
    arch, folder, _ = saved
    enc = load_vision_encoder(f"transformers:{arch}:{folder}")
    a, b = _frames(6, 1), _frames(4, 2)
    both = encode_clips(enc, [a, b])
    assert np.allclose(both, np.concatenate([enc.encode_frames(a), enc.encode_frames(b)]))
    assert not np.allclose(both, enc.encode_frames(np.concatenate([a, b])))  # one 10-frame clip is another input
    x = torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    enc.features(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_specs_name_a_folder_or_a_hub_id_and_bad_ones_fail_in_one_line(saved, tmp_path):
    arch, folder, _ = saved
    hub = parse_spec("transformers:vivit:google/vivit-b-16x2-kinetics400")
    assert hub.checkpoint is None and hub.weights == "google/vivit-b-16x2-kinetics400"  # a hub id, not a path
    assert parse_spec(f"transformers:{arch}:{folder}").checkpoint == folder
    other = "vjepa2" if arch == "vivit" else "vivit"
    with pytest.raises(ValueError, match=f"holds a '{arch}' model, not '{other}'"):
        load_vision_encoder(f"transformers:{other}:{folder}")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_vision_encoder(f"transformers:{arch}:{tmp_path}")
    with pytest.raises(ValueError, match="ARCH in"):
        parse_spec("transformers:videomae:/x")
