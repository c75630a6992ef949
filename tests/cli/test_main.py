"""The `vta` CLI end to end, as a user runs it: real subprocesses, Prefect's ephemeral API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from mediafiles import real_clips
from procs import run_vta

vta = run_vta


def test_help_lists_commands(env):
    out = vta(["--help"], env).stdout
    for cmd in ("demo", "ingest", "synth", "artifacts"):
        assert cmd in out


def test_usage_errors_exit_2_and_missing_input_is_one_line(env, tmp_path):
    assert vta(["ingest"], env, check=False).returncode == 2
    proc = vta(["artifacts", "show", "decode", "--root", str(tmp_path)], env, check=False)
    assert proc.returncode == 1 and "no committed artifact" in proc.stderr.strip().splitlines()[-1]


STAGES = ["decode", "features", "flow", "align", "filter", "augment", "vae", "latents", "shards"]


def test_ingest_real_and_synthetic_then_rerun_reuses(env, tmp_path):
    videos = tmp_path / "videos"
    reals = real_clips(videos)
    vta(["synth", str(tmp_path / "syn"), "--clips", "8", "--seed", "3"], env)
    for p in (tmp_path / "syn" / "videos").iterdir():
        shutil.copy(p, videos / p.name)
    labels = tmp_path / "labels.csv"
    labels.write_text((tmp_path / "syn" / "labels.csv").read_text()
                      + "debian_imageio_cockatoo_silent,0,bird chirping,train\n")
    root = tmp_path / "root"
    args = ["ingest", str(videos), "--labels", str(labels), "--root", str(root), "--preset", "tiny",
            "--max-windows", "1"]

    result = json.loads(vta([*args, "--json"], env).stdout)
    stages = {s["stage"]: s for s in result["stages"]}
    assert list(stages) == STAGES and not any(s["reused"] for s in stages.values())
    manifest = pq.read_table(Path(stages["decode"]["path"]) / "manifest.parquet").to_pylist()
    assert len(manifest) == len(reals) + 8 == stages["decode"]["counts"]["ok"]
    rows = {r["clip_id"]: r for r in manifest}
    cock = rows["debian_imageio_cockatoo_silent"]
    assert cock["status"] == "ok" and cock["silent"] is True and cock["label"] == "bird chirping"
    assert sum(r["label"] is not None for r in manifest) == 9
    for r in manifest:
        assert abs(r["frames_decoded"] - r["frames_expected"]) <= 1, r["clip_id"]
    windows = {r["key"] for r in pq.read_table(Path(stages["decode"]["path"]) / "windows.parquet").to_pylist()}
    for name in ("features", "flow", "align", "filter"):  # one row per decoded window, nothing lost
        keys = [r["clip_id"] for r in pq.read_table(Path(stages[name]["path"]) / "manifest.parquet").to_pylist()]
        assert sorted(keys) == sorted(windows), name
    n_aug = stages["augment"]["counts"]["ok"]
    lat_keys = [r["clip_id"] for r in pq.read_table(Path(stages["latents"]["path"]) / "manifest.parquet").to_pylist()]
    assert len(lat_keys) == len(windows) + n_aug and windows <= set(lat_keys)

    paths = [p for s in stages.values() for p in Path(s["path"]).rglob("*")]
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    second = vta(args, env)
    assert "reused the committed artifacts: decode@" + stages["decode"]["version"] in second.stderr
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes

    listed = json.loads(vta(["artifacts", "list", "--json", "--root", str(root)], env).stdout)
    assert sorted(a["stage"] for a in listed) == sorted(STAGES) and all(a["committed"] for a in listed)
    dec = next(a for a in listed if a["stage"] == "decode")
    assert dec["counts"] == {"ok": len(reals) + 8, "failed": 0, "filtered": 0}
    shown = json.loads(vta(["artifacts", "show", f"decode@{dec['version']}", "--verify", "--json", "--root",
                            str(root)], env).stdout)
    assert shown["corrupt_files"] == [] and shown["params"]["fps"] == 4.0
    rerun = json.loads(vta(["run", "features", "--force", "--json", "--root", str(root)], env).stdout)
    assert rerun["reproducible"] is True and rerun["differing_files"] == []


def test_info_reports_the_paper_unet(env):
    out = json.loads(vta(["info", "--preset", "paper", "--json"], env).stdout)
    assert out["geometry"]["derived"]["latent_shape"] == [8, 256, 16]
    assert abs(out["parameters"]["unet"] / 1e6 - 578.05) < 0.1
    recipe = out["recipe"]  # the official recipe
    assert (recipe["prediction_type"], recipe["steps_offset"], recipe["loss_weight"]) == ("v_prediction", 1, "min(SNR, 5)/SNR")
    assert (recipe["lr_schedule"], recipe["warmup"], recipe["guidance"]) == ("linear", 300, 3.0)


def test_metrics_av_align_cli(env):
    clip = Path(__file__).parents[1] / "data" / "debian_imageio_realshort.mp4"
    out = json.loads(vta(["metrics", "av-align", str(clip), "--json"], env).stdout)
    assert 0.0 <= out["av_align"] <= 1.0 and out["video_peaks"] > 0 and out["audio_peaks"] > 0


def test_strict_exits_3_when_an_input_failed(env, tmp_path):
    videos = tmp_path / "v"
    videos.mkdir()
    shutil.copy(Path(__file__).parents[1] / "data" / "debian_imageio_realshort.mp4", videos)
    (videos / "broken.mp4").write_bytes(b"not a video")
    root = str(tmp_path / "root")
    args = ["ingest", str(videos), "--root", root, "--preset", "tiny", "--no-filter"]
    assert vta([*args, "--json"], env).returncode == 0
    assert vta([*args, "--strict"], env, check=False).returncode == 3


def test_demo_quick(env, tmp_path):
    out = json.loads(vta(["demo", "--quick", "--root", str(tmp_path), "--json"], env).stdout)
    stages = {s["stage"]: s for s in out["stages"]}
    assert stages["synth"]["counts"]["ok"] == 12 and stages["decode"]["counts"]["ok"] == 12
    assert stages["shards"]["counts"]["ok"] > 0
    assert [s["stage"] for s in out["stages"]].count("train") == 2  # pretrain, then finetune
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert Path(out["report"]) == tmp_path / "report" / "report.json"
    assert set(report["metrics"]) == {"generated", "mismatched_video", "shuffled_video", "unconditional",
                                      "reconstruction", "ground_truth"}
    for block in report["metrics"].values():
        assert {"av_align", "onset_f1", "event_class_accuracy", "fd_synth", "kl_synth", "intervals"} <= set(block)
    assert set(report["metrics"]["generated"]["paired"]) == set(report["metrics"]) - {"generated"}
    assert report["config"]["audio_classifier"].startswith("audio_classifier@")
    assert report["config"]["evaluation_ref"].startswith("evaluation@")  # the demo's evaluation is versioned
    assert "no synthetic audio classifier" not in json.dumps(report["unavailable"])  # the demo trained one
    assert report["checkpoint"].startswith(str(tmp_path)) and report["timings_s"]["train_s"] > 0
    assert (tmp_path / "report" / "report.html").stat().st_size > 0


def test_artifacts_verify_names_the_damaged_artifact_and_file(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli
    from storage import ArtifactStore, StageSpec

    store = ArtifactStore(str(tmp_path))
    arts = []
    for stage in ("decode", "features"):
        with store.writer(StageSpec(stage, {"n": 1}, {}, "1")) as w:
            w.write_bytes("a.bin", b"\x00" * 64)
            w.write_bytes("b.bin", b"\x01" * 64)
            arts.append(w.commit(counts={"ok": 2, "failed": 0, "filtered": 0}))
    res = CliRunner().invoke(cli, ["artifacts", "verify", "--root", str(tmp_path)])
    assert res.exit_code == 0 and "2 of 2 artifact(s) intact" in res.output
    damaged = Path(arts[1].path) / "b.bin"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 0xFF  # one flipped byte
    damaged.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["artifacts", "verify", "--root", str(tmp_path)])
    assert res.exit_code == 1
    line = next(x for x in res.output.splitlines() if "damaged" in x)
    assert line.startswith(arts[1].ref) and "b.bin" in line and "a.bin" not in line
    assert "1 of 2 artifact(s) intact" in res.output
    one = CliRunner().invoke(cli, ["artifacts", "verify", arts[0].ref, "--root", str(tmp_path), "--json"])
    assert one.exit_code == 0 and json.loads(one.output) == [{"ref": arts[0].ref, "files": 2, "damaged": []}]


def test_synth_world_options_are_recorded_and_bad_ones_named(tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    out = tmp_path / "hard"
    res = CliRunner().invoke(cli, ["synth", str(out), "--clips", "2", "--duration", "1.5", "--world", "lookalike",
                                   "--world", "moving"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "synth.json").read_text())
    assert set(meta["world"]) == {"lookalike", "moving"} and "overlap" not in meta["params"]
    res = CliRunner().invoke(cli, ["synth", str(tmp_path / "bad"), "--world", "crowded"])
    assert res.exit_code == 2 and "'crowded' is not one of" in res.output
