"""A script two test processes run at once: write one version slowly, commit, say COMMITTED or REUSED.

    python -c "$SLOW_WRITER" ROOT
"""

import textwrap

SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from storage import ArtifactStore, StageSpec, ok_row
    store = ArtifactStore(sys.argv[1])
    spec = StageSpec("slow", {"n": 5}, {}, "1")
    with store.writer(spec) as w:
        if w.committed:
            print("REUSED", w.artifact.version, flush=True)
        else:
            for i in range(5):
                w.write_bytes(f"part-{i}.bin", bytes([i]) * 100000)
                time.sleep(0.25)
            art = w.commit(rows=[ok_row(f"c{i}") for i in range(5)])
            print("REUSED" if art.reused else "COMMITTED", art.version, flush=True)
""")
