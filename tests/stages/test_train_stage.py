"""train stage on tiny shards: artifact layout, reuse, exact resume after a kill, fine-tuning."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_shards import build_shards

from stages.train import train_stage
from storage import ArtifactStore
from vta_core.checkpoint import checkpoint_dir, load_checkpoint
from vta_core.presets import get_preset
from vta_core.synth_world import generate_synth

G = get_preset("tiny").geometry
KW = dict(preset=get_preset("tiny"), steps=6, batch_size=2, ckpt_every=2, seed=3)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two identical roots holding the same committed shards (one trains uninterrupted, one is killed)."""
    torch.set_num_threads(1)
    syn = tmp_path_factory.mktemp("syn")
    generate_synth(syn, clips=4, seed=1, duration_s=2.0, size=64)
    a = tmp_path_factory.mktemp("a")
    build_shards(a, syn / "videos", syn / "labels.csv")
    b = tmp_path_factory.mktemp("b") / "root"
    shutil.copytree(a, b)
    return a, b


@pytest.fixture(scope="module")
def trained(roots):
    store = ArtifactStore(str(roots[0]))
    return store, train_stage(store, shards=store.resolve("shards"), **KW)


def test_layout_config_and_reuse(trained):
    store, art = trained
    files = set(art.record["files"])
    for name in ("checkpoint/config.json", "checkpoint/model.safetensors", "checkpoint/ema.safetensors",
                 "checkpoint/vae/config.json", "checkpoint/vae/diffusion_pytorch_model.safetensors",
                 "run/step_0000002/state/state.json", "run/step_0000006/ema.safetensors", "loss.png",
                 "history.json"):
        assert name in files, name
    assert any(f.startswith("run/train/") and "tfevents" in f for f in files)
    history = json.loads(Path(art.file("history.json")).read_text())
    assert len(history["loss"]) == 6 and len(history["lr"]) == 6
    assert Path(art.file("loss.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ck = load_checkpoint(checkpoint_dir(art))
    assert ck.geometry == G and ck.model.config.vision_dim == 48  # pixels:4 -> 3·4² tokens
    cond = ck.config["conditioning"]
    assert cond["vision"] == "pixels:4" and cond["flow"] == {"encoder": "pixels:4", "method": "farneback", "flow_size": 16}
    assert ck.config["vae"] == "vae" and ck.config["training"]["step"] == 6
    assert ck.config["lineage"]["shards"] == store.resolve("shards").ref
    assert store.verify(art) == []

    again = train_stage(store, shards=store.resolve("shards"), **KW)
    assert again.reused and again.version == art.version


class Kill(Exception):
    pass


def test_rerun_after_a_kill_resumes_and_matches(trained, roots):
    _, full = trained
    store = ArtifactStore(str(roots[1]))
    shards = store.resolve("shards")

    def kill_at_step_4(done, total):
        if done == 5:  # drawing the batch of step index 4: steps 0..3 ran, step_0000004 was saved
            raise Kill

    with pytest.raises(Kill):
        train_stage(store, shards=shards, progress=kill_at_step_4, **KW)
    assert store.list("train") == []  # nothing committed
    resumed = train_stage(store, shards=shards, **KW)
    assert resumed.version == full.version and resumed.record["resumed_from_step"] == 4
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(full.file(f"checkpoint/{name}")), load_file(resumed.file(f"checkpoint/{name}"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    history = [json.loads(Path(x.file("history.json")).read_text()) for x in (full, resumed)]
    assert history[0] == history[1]


def test_finetune_from_a_train_artifact(trained):
    store, pre = trained
    ft = train_stage(store, shards=store.resolve("shards"), mode="finetune", init=pre, preset=get_preset("tiny"), steps=2,
                     batch_size=2, seed=3)
    assert ft.version != pre.version and ft.record["inputs"]["init"] == pre.ref
    ck = load_checkpoint(checkpoint_dir(ft))
    assert ck.config["training"]["mode"] == "finetune"
    assert ck.config["training"]["init_checkpoint"] == str(checkpoint_dir(pre))
    before = load_file(pre.file("checkpoint/ema.safetensors"))
    after = load_file(ft.file("checkpoint/ema.safetensors"))
    assert not all(torch.equal(before[k], after[k]) for k in before)  # it trained further


def test_objective_and_lr_schedule_are_recorded_only_when_not_the_default(trained):
    """The default run records neither (earlier versions keep their hash); a preset whose schedule is
    "linear" (as paper's) trains with it and records it; objective="eq1" trains ε, unweighted."""
    store, art = trained
    assert "lr_schedule" not in art.params and "objective" not in art.params
    assert load_checkpoint(checkpoint_dir(art)).config["training"]["lr_schedule"] == "constant_with_warmup"
    tiny = get_preset("tiny")
    linear = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, lr_schedule="linear"),
                                 model=dataclasses.replace(tiny.model, prediction_type="v_prediction", snr_gamma=5.0,
                                                           snr_weighting="epsilon"))
    eq1 = train_stage(store, shards=store.resolve("shards"), preset=linear, steps=4, batch_size=2, seed=3,
                      objective="eq1")
    assert eq1.params["lr_schedule"] == "linear" and eq1.params["objective"] == "eq1"
    model = eq1.params["model"]
    assert (model["prediction_type"], model["snr_gamma"], model["snr_weighting"]) == ("epsilon", None, None)
    assert model["steps_offset"] == linear.model.steps_offset  # everything else the preset's
    ck = load_checkpoint(checkpoint_dir(eq1))
    assert ck.model.config.prediction_type == "epsilon" and ck.config["training"]["lr_schedule"] == "linear"
    lr = json.loads(Path(eq1.file("history.json")).read_text())["lr"]
    base = tiny.train.lr  # warm-up 2 steps, then linear decay to 0 at step 4
    assert lr == pytest.approx([base / 2, base, base / 2, 0.0])
    with pytest.raises(ValueError, match=r"objective must be None or one of \['eq1'\], got 'eq2'"):
        train_stage(store, shards=store.resolve("shards"), preset=tiny, objective="eq2")


def test_bad_requests_are_one_clear_error(trained):
    store, _ = trained
    shards = store.resolve("shards")
    with pytest.raises(ValueError, match="needs init"):
        train_stage(store, shards=shards, mode="finetune", preset=get_preset("tiny"))
    with pytest.raises(ValueError, match="text=True but the samples"):
        train_stage(store, shards=shards, text=True, preset=get_preset("tiny"))
    with pytest.raises(ValueError, match="latents"):
        train_stage(store, shards=shards, preset=get_preset("demo"))
