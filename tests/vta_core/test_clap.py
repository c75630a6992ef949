"""CLAP scoring through laion_clap's real loading path, offline, with random weights in the released format.

laion_clap reads hub files while it imports and builds (tokenizers of bert-base-uncased, roberta-base,
facebook/bart-base; the roberta-base model). The test builds tiny stand-ins into a temporary Hugging Face
cache (snapshot layout; RoBERTa keeps width 768 because CLAP's text projection is Linear(768, 512), with
1 layer and a 261-token byte-level vocabulary) and runs in a subprocess, because huggingface_hub reads
HF_HUB_CACHE / HF_HUB_OFFLINE once, when it is first imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vta_core.clap import load_clap, read_clap_checkpoint

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]


def offline_env(hf_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # fmt: skip
    return env


def run_worker(*args: str, hf_home: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE), *args], env=offline_env(hf_home), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)  # fmt: skip


# --- run in the subprocess ---------------------------------------------------------------------------
def build_fake_hf_cache(cache: Path) -> None:
    """Tiny random stand-ins for the hub repos laion_clap loads, in the HF cache snapshot layout."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import BartTokenizer, BertTokenizer, RobertaConfig, RobertaModel, RobertaTokenizer

    def snapshot(repo: str) -> Path:
        base = cache / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text("0" * 40)
        path = base / "snapshots" / ("0" * 40)
        path.mkdir(parents=True, exist_ok=True)
        return path

    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    for ch in sorted(ByteLevel.alphabet()):  # every byte is a token: any text encodes without merges
        vocab[ch] = len(vocab)
    vocab["<mask>"] = len(vocab)
    roberta = snapshot("roberta-base")
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(roberta)
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=1, num_attention_heads=12,
                           intermediate_size=64, max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)  # fmt: skip
    RobertaModel(config).save_pretrained(roberta)
    BartTokenizer(vocab=vocab, merges=[]).save_pretrained(snapshot("facebook/bart-base"))
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(snapshot("bert-base-uncased"))


def save_released_format(model: torch.nn.Module, path: Path) -> None:
    """As 630k-audioset-best.pt: {"epoch", "state_dict"} with DDP "module." keys and position_ids."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.text_branch.embeddings.position_ids"] = torch.arange(514).unsqueeze(0)
    torch.save({"epoch": 45, "state_dict": state}, path)


def worker_roundtrip(tmp: Path) -> dict:
    build_fake_hf_cache(Path(os.environ["HF_HUB_CACHE"]))
    import laion_clap
    from clap_module.factory import load_state_dict as laion_load_state_dict  # laion_clap's own reader

    from vta_core.clap import ClapScorer

    torch.manual_seed(0)
    reference = laion_clap.CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", device="cpu")
    reference.eval()
    ckpt = tmp / "630k-audioset-best.pt"
    save_released_format(reference.model, ckpt)

    rng = np.random.default_rng(0)
    t = np.arange(48000 * 3) / 48000
    audio_48k = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    texts = ["a dog barks", "church bell ringing", "silence"]
    with torch.no_grad():
        a = reference.get_audio_embedding_from_data(audio_48k[None], use_tensor=False)[0]
        e = reference.get_text_embedding(texts, use_tensor=False)
    expected = e @ a / (np.linalg.norm(e, axis=1) * np.linalg.norm(a))

    torch.manual_seed(123)  # a different random init: only the checkpoint can make them equal
    scorer = ClapScorer(ckpt)
    expected_state = reference.model.state_dict()
    loaded_state = scorer.module.model.state_dict()
    weights_equal = loaded_state.keys() == expected_state.keys() and all(
        torch.equal(v, expected_state[k]) for k, v in loaded_state.items()
    )
    partial = tmp / "partial.pt"  # e.g. a fusion checkpoint or a truncated save: keys do not fit
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"].pop("module.logit_scale_a")
    torch.save(state, partial)
    try:
        ClapScorer(partial)
        mismatch = None
    except ValueError as e:
        mismatch = str(e)
    laion_state = laion_load_state_dict(str(ckpt), skip_params=True)
    ours_state = read_clap_checkpoint(ckpt)
    return {
        "weights_equal": weights_equal,
        "laion_reader_agrees": laion_state.keys() == ours_state.keys()
        and all(torch.equal(laion_state[k], ours_state[k]) for k in ours_state),
        "mismatch": mismatch,
        "expected": expected.tolist(),
        "scores": scorer.score(audio_48k, 48000, texts).tolist(),
        "scores_16k": scorer.score(audio_48k[::3].copy(), 16000, texts[:1]).tolist(),
        "scores_12s": scorer.score(np.tile(audio_48k, 4), 48000, texts[:1]).tolist(),
        "scores_12s_again": scorer.score(np.tile(audio_48k, 4), 48000, texts[:1]).tolist(),
    }


def worker_missing_cache(tmp: Path) -> dict:
    from vta_core.clap import ClapScorer, ClapUnavailable

    dummy = tmp / "clap.pt"
    dummy.write_bytes(b"x")
    try:
        ClapScorer(dummy)
    except ClapUnavailable as e:
        return {"error": str(e), "laion_imported": "laion_clap" in sys.modules}
    return {"error": None}


# --- the tests -----------------------------------------------------------------------------------------
def test_released_checkpoint_loads_through_laion_clap(tmp_path):
    proc = run_worker("roundtrip", str(tmp_path), hf_home=tmp_path / "hf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["weights_equal"] and out["laion_reader_agrees"]
    assert "partial.pt" in out["mismatch"] and "1 missing" in out["mismatch"] and "\n" not in out["mismatch"]
    scores = np.array(out["scores"])
    assert scores.shape == (3,) and np.isfinite(scores).all() and (np.abs(scores) <= 1 + 1e-6).all()
    np.testing.assert_allclose(scores, out["expected"], atol=1e-6)  # identical to the in-memory model
    assert np.isfinite(out["scores_16k"]).all() and abs(out["scores_16k"][0]) <= 1 + 1e-6
    assert out["scores_12s"] == out["scores_12s_again"]  # > 10 s: deterministic crop, no random offset


def test_missing_hub_files_offline_fail_in_one_line(tmp_path):
    proc = run_worker("missing", str(tmp_path), hf_home=tmp_path / "empty-hf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] and "roberta-base" in out["error"] and "HF_HUB_OFFLINE" in out["error"]
    assert "\n" not in out["error"] and not out["laion_imported"]  # failed before the hub-touching import


def test_no_checkpoint_and_bad_checkpoints(tmp_path):
    assert load_clap(None) is None and load_clap("") is None
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_clap(tmp_path / "nowhere.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        read_clap_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": np.random.default_rng}, unsafe)
    with pytest.raises(ValueError, match="unsafe.pt"):  # weights_only refuses arbitrary objects
        read_clap_checkpoint(unsafe)
    plain = tmp_path / "plain.pt"
    torch.save({"module.a": torch.ones(2), "module.text_branch.embeddings.position_ids": torch.arange(3)}, plain)
    assert list(read_clap_checkpoint(plain)) == ["a"]


if __name__ == "__main__":
    torch.set_num_threads(1)
    worker = {"roundtrip": worker_roundtrip, "missing": worker_missing_cache}[sys.argv[1]]
    print(json.dumps(worker(Path(sys.argv[2]))))
