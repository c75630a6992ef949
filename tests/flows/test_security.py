"""Security: nothing escapes the artifact root (artifact refs, clip ids from file names and label
rows), weights load only from safetensors (+ JSON) or through ``torch.load(weights_only=True)``,
and Prefect's server binds to loopback unless configured otherwise."""

from __future__ import annotations

import ast
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from mediafiles import make_clip

from cli.main import cli
from stages.decode import DecodeParams, decode_stage
from storage import ArtifactStore
from vta_core.checkpoint import load_checkpoint, save_checkpoint
from vta_core.evaluation.scoring import synth_clips
from vta_core.presets import build_model, get_preset

REPO = Path(__file__).parents[2]
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def tree(path: Path) -> set[Path]:
    return set(path.rglob("*"))


@pytest.mark.parametrize("args", [
    ["artifacts", "show", "../x"], ["artifacts", "show", "decode@../../etc"], ["artifacts", "list", "../../etc"],
    ["artifacts", "show", "decode@..%2F..%2Fetc"], ["run", "decode@../../etc"], ["run", "/etc/passwd"],
])
def test_artifact_refs_cannot_escape_the_root(args, tmp_path):
    root = tmp_path / "a" / "root"
    (root / "decode").mkdir(parents=True)
    before = tree(tmp_path)
    res = CliRunner().invoke(cli, [*args, "--root", str(root)])
    assert res.exit_code == 1, res.output
    assert re.search(r"invalid (stage|version) ", res.output) and len(res.output.strip().splitlines()) == 1
    assert tree(tmp_path) == before  # nothing created or read outside (or inside) the root


def test_clip_ids_from_file_names_and_labels_stay_inside(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("..mp4", "..\\..\\evil.mp4", "evil.mp4", ".hidden.mp4"):
        make_clip(videos / name, seconds=1.0)
    labels = tmp_path / "labels.csv"
    labels.write_text("../../evil,0,dog barking,train\n/etc/passwd,0,cat,train\nevil,0,bird,train\n")
    g = get_preset("tiny").geometry
    root = tmp_path / "root"
    params = DecodeParams.from_geometry(g, max_windows=1)
    art = decode_stage(ArtifactStore(str(root)), videos_dir=videos, labels_csv=labels, params=params)
    rows = art.read_table().to_pylist()
    assert len(rows) == 4 and all(SAFE_ID.match(r["clip_id"]) for r in rows), [r["clip_id"] for r in rows]
    labels_by_file = {Path(r["source_path"]).name: r["label"] for r in rows}
    assert labels_by_file == {"..mp4": None, "..\\..\\evil.mp4": None, "evil.mp4": "bird", ".hidden.mp4": None}
    outside = tree(tmp_path) - tree(root) - tree(videos) - {root, labels, videos}
    assert outside == set()

    synth = tmp_path / "synth"
    (synth / "videos").mkdir(parents=True)
    (synth / "events.parquet").write_bytes(b"")
    (synth / "labels.csv").write_text("../../../tmp/x,0,drum,test\n")
    with pytest.raises(ValueError, match=r"clip id '\.\./\.\./\.\./tmp/x' is not a safe file name"):
        synth_clips(synth, split="test")


class _Boom:
    """Unpickling this object would create a file: proof that a pickle was (not) loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoints_load_only_from_safetensors(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model=build_model("tiny", seed=0, vision_dim=48), geometry=get_preset("tiny").geometry)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "pwned"
    for name in ("model.bin", "pytorch_model.bin", "model.pt", "model.ckpt"):
        (folder / name).write_bytes(pickle.dumps(_Boom(str(marker))))
    with pytest.raises(FileNotFoundError, match=r"no weights at .*model\.safetensors"):
        load_checkpoint(folder)
    assert not marker.exists()


def _unsafe_loads(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        kw = {k.arg: k.value for k in node.keywords}
        if owner == "torch" and node.func.attr == "load":
            flag = kw.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                out.append(f"{path.name}:{node.lineno}: torch.load without weights_only=True")
        if owner in ("np", "numpy") and node.func.attr == "load":
            flag = kw.get("allow_pickle")
            if isinstance(flag, ast.Constant) and flag.value is True:
                out.append(f"{path.name}:{node.lineno}: np.load(allow_pickle=True)")
        if owner == "pickle" and node.func.attr in ("load", "loads") and "tests" not in path.parts:
            out.append(f"{path.name}:{node.lineno}: pickle.{node.func.attr}")
    return out


def test_no_unsafe_deserialisation_in_the_source():
    files = [p for d in ("vta_core", "stages", "storage", "flows", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 40
    assert [hit for p in files for hit in _unsafe_loads(p)] == []



def test_the_source_check_finds_unsafe_calls(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nx = torch.load('m.pt')\ny = torch.load('m.pt', weights_only=False)\n"
                   "z = torch.load('m.pt', weights_only=True)\n")
    assert len(_unsafe_loads(bad)) == 2


def test_prefect_server_binds_to_loopback_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_API_HOST")}
    env["PREFECT_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "from prefect.settings import PREFECT_SERVER_API_HOST as h; "
                          "print(h.value())"], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "127.0.0.1"
