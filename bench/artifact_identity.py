"""Are two artifact roots byte-identical? sha256 of every file, ``_COMMITTED.json`` aside (it records
creation times); used to show that a refactor left every artifact's bytes unchanged.

    python bench/artifact_identity.py hashes ROOT --out HASHES.json     the hashes of one root
    python bench/artifact_identity.py compare HASHES_A.json ROOT_B [--name NAME]

Both roots must have been written at the same path (decode records absolute source paths). ``compare``
prints the differing files and writes bench/results/artifact_identity_NAME.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def root_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256[:16]} of every file under ``root`` except commit records and locks."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "_COMMITTED.json" and not p.name.endswith(".lock")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hashes")
    h.add_argument("root", type=Path)
    h.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("baseline", type=Path, help="hashes JSON of the baseline root")
    c.add_argument("root", type=Path)
    c.add_argument("--name", default="ingest")
    args = ap.parse_args()
    if args.cmd == "hashes":
        args.out.write_text(json.dumps(root_hashes(args.root), indent=1) + "\n")
        return
    base = {k: v for k, v in json.loads(args.baseline.read_text()).items() if not k.endswith("_COMMITTED.json")}
    new = root_hashes(args.root)
    result = {
        "command": " ".join(["python", "bench/artifact_identity.py", *sys.argv[1:]]),
        "files_baseline": len(base), "files_new": len(new),
        "only_in_baseline": sorted(set(base) - set(new)), "only_in_new": sorted(set(new) - set(base)),
        "differing": sorted(k for k in set(base) & set(new) if base[k] != new[k]),
        "stage_versions": sorted({"/".join(Path(k).parts[:2]) for k in new if len(Path(k).parts) > 2}),
    }
    result["identical"] = not (result["only_in_baseline"] or result["only_in_new"] or result["differing"])
    out = ROOT / "bench" / "results" / f"artifact_identity_{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'IDENTICAL' if result['identical'] else 'DIFFERENT'}: {len(new)} files vs {len(base)}; "
          f"differing {result['differing'][:10]}; wrote {out}")


if __name__ == "__main__":
    main()
