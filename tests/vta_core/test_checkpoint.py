import json
import random

import numpy as np
import pytest
import torch

from vta_core.checkpoint import load_checkpoint, load_training_state, save_checkpoint, save_training_state
from vta_core.presets import build_model, get_preset


def _outputs(model, seed=0):
    g = get_preset("tiny").geometry
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, *g.latent_shape, generator=gen)
    vision = torch.randn(2, g.num_frames, 32, generator=gen)
    with torch.no_grad():
        cond = model.condition({"vision": vision}, latent_frames=g.latent_frames, geometry=g)
        return model(z, torch.tensor([3, 700]), cond)


def test_save_reload_gives_identical_outputs(tmp_path):
    model = build_model("tiny", seed=1, text_dim=6).eval()
    save_checkpoint(tmp_path / "ck", model=model, geometry=get_preset("tiny").geometry, extra={"note": "x"})
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.model.config == model.config
    assert loaded.geometry == get_preset("tiny").geometry
    assert loaded.config["note"] == "x"
    assert torch.equal(_outputs(model), _outputs(loaded.model))
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert cfg["model"]["text_dim"] == 6 and cfg["geometry"]["derived"]["latent_shape"] == [4, 32, 20]


def test_ema_weights_are_preferred(tmp_path):
    model = build_model("tiny", seed=1)
    other = build_model("tiny", seed=2)
    save_checkpoint(tmp_path, model=model, geometry=get_preset("tiny").geometry, ema_weights=other.state_dict())
    assert torch.equal(_outputs(load_checkpoint(tmp_path).model), _outputs(other))
    assert torch.equal(_outputs(load_checkpoint(tmp_path, weights="model").model), _outputs(model))


def test_missing_or_foreign_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint config"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="format 'other'"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="weights must be"):
        load_checkpoint(tmp_path, weights="best")


def test_training_state_round_trip_restores_optimizer_and_rngs(tmp_path):
    model = build_model("tiny")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    model.loss({"latents": torch.randn(2, 4, 32, 20), "vision": torch.randn(2, 5, 32)},
               geometry=get_preset("tiny").geometry).backward()
    opt.step()
    sched.step()
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    save_training_state(tmp_path, optimizer=opt, lr_scheduler=sched, ema=None, step=1, data_position=7,
                        generators={"noise": gen})
    expected = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))

    opt2 = torch.optim.AdamW(build_model("tiny").parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: min(1.0, (s + 1) / 10))
    gen2 = torch.Generator()
    pos = load_training_state(tmp_path, optimizer=opt2, lr_scheduler=sched2, ema=None, ema_weights=None,
                              generators={"noise": gen2})
    assert pos == {"step": 1, "data_position": 7, "world_size": 1, "exact": True}
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen2))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["exp_avg_sq"], s2["state"][i]["exp_avg_sq"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in tmp_path.iterdir())  # never pickle
