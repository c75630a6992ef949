"""The ingest DAG without Prefect (flows/dag.py), its config, and `vta run` of every stage it made."""

from __future__ import annotations

import dataclasses

import pytest

from flows.dag import IngestConfig, run_ingest
from flows.rerun import RERUN, rerun
from stages.synth import synth_paths, synth_stage
from storage import ArtifactStore
from vta_core.presets import PRESETS, get_preset

INGEST_STAGES = ["decode", "features", "flow", "align", "filter", "augment", "vae", "latents", "shards"]


def test_config_defaults_come_from_the_preset():
    assert IngestConfig() == IngestConfig.for_preset("demo")
    for name, preset in PRESETS.items():
        cfg = dataclasses.asdict(IngestConfig.for_preset(name, vae_steps=None, seed=4))
        assert {k: cfg[k] for k in dataclasses.asdict(preset.ingest)} == dataclasses.asdict(preset.ingest)
        assert cfg["preset"] == name and cfg["seed"] == 4
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        IngestConfig.for_preset("nope")


def test_every_ingest_stage_has_a_rerun():
    assert sorted(RERUN) == sorted(["synth", *INGEST_STAGES])
    for name, module in RERUN.items():
        assert module.STAGE == name and callable(module.rerun)


def test_run_ingest_then_every_stage_reruns_to_the_same_bytes(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    syn = synth_stage(store, clips=4, seed=2, duration_s=2.0, size=64, test_fraction=0.25)
    cfg = IngestConfig.for_preset("tiny", max_windows=1, vae_steps=2, av_align_threshold=0.0)
    ran: list[str] = []

    def run_step(name, step):
        ran.append(name)
        return step(None)

    paths = synth_paths(syn)
    arts = run_ingest(store, videos_dir=paths["videos_dir"], labels_csv=paths["labels_csv"], config=cfg,
                      lineage={"synth": syn.ref}, run_step=run_step)
    assert ran == [a.stage for a in arts] == INGEST_STAGES
    assert arts[0].record["inputs"]["synth"] == syn.ref
    assert arts[-3].params["geometry"] == get_preset("tiny").geometry.to_dict()  # vae
    again = run_ingest(store, videos_dir=paths["videos_dir"], labels_csv=paths["labels_csv"], config=cfg,
                       lineage={"synth": syn.ref})
    assert [a.ref for a in again] == [a.ref for a in arts] and all(a.reused for a in again)
    for art in [syn, *arts]:
        report = rerun(art.ref, root=store.root, force=True, log=lambda m: None)
        assert report["reproducible"], (art.ref, report["differing_files"])
