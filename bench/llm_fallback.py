"""The LLM layout's fallback, measured (issue 33 item 3): how long until the rules' layout is used when the endpoint
is slow (timeouts 0.5 / 1 / 2 s against a stand-in that answers after timeout + 5 s) or answers bad JSON, next to a
good plan; and what each gives (the layout's source, the warning). Filter + layout only, no drawing: the drawing
costs the same whichever boxes it gets.

    python bench/llm_fallback.py [--repeats 3] [--out bench/last_llm_fallback.json]

The stand-in is tests/llm_stub.py (a local HTTP server); the vocabulary is the shipped reference model's. Wall
time includes the offline filter the fallback runs (its CPU time is reported too: on a loaded machine the wall
time of that part stretches)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_stub import LLMStub  # noqa: E402

from minicream.filter import load_vocabulary, rewrite  # noqa: E402
from minicream.filter.llm import LLMConfig  # noqa: E402
from minicream.pipelines import shipped_model_dir  # noqa: E402
from minicream.pipelines.layout_plan import scene_layout  # noqa: E402

PROMPT = "a dog face to the left of a red apple"
GOOD = {"prompt": PROMPT, "objects": [{"concept": "dog face", "boxes": [[0.0, 0.1, 0.4, 0.9]]},
                                      {"concept": "red apple", "boxes": [[0.55, 0.25, 0.95, 0.75]]}]}


def one(vocab, stub, timeout: float) -> dict:
    """Filter + layout once: wall and CPU seconds, the layout's source, the warning."""
    cfg = LLMConfig(url=stub.url, model="stub", timeout=timeout)
    t0, c0 = time.perf_counter(), time.process_time()
    r = rewrite(PROMPT, "llm", vocab, llm=cfg)
    lay = scene_layout(r.scene, r.plan, 64, 8, seed=0)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "source": lay.source,
            "filter": r.mode_used, "warning": r.warnings[0] if r.warnings else None}


def case(vocab, stub, name: str, reply, kind: str, timeout: float, repeats: int, delay: float = 0.0) -> dict:
    stub.script(PROMPT, reply, kind, delay)
    runs = [one(vocab, stub, timeout) for _ in range(repeats)]
    return {"case": name, "timeout_s": timeout, "repeats": repeats,
            "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 3),
            "wall_s_max": round(max(r["wall_s"] for r in runs), 3),
            "cpu_s_median": round(statistics.median(r["cpu_s"] for r in runs), 3),
            "source": runs[0]["source"], "filter": runs[0]["filter"], "warning": runs[0]["warning"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "last_llm_fallback.json"))
    args = ap.parse_args()
    vocab = load_vocabulary(shipped_model_dir("reference"))
    rewrite(PROMPT, "offline", vocab)  # warm: the offline filter's tables are built once per vocabulary
    rows = []
    with LLMStub() as stub:
        rows.append(case(vocab, stub, "good plan", GOOD, "ok", 2.0, args.repeats))
        rows.append(case(vocab, stub, "bad JSON", '{"prompt": "a dog face", "objects": [', "ok", 2.0, args.repeats))
        for timeout in (0.5, 1.0, 2.0):
            rows.append(case(vocab, stub, "slow endpoint", GOOD, "slow", timeout, args.repeats, delay=timeout + 5))
    for r in rows:
        print(f"{r['case']:>14}  timeout {r['timeout_s']:.1f} s  wall {r['wall_s_median']:.3f} s (max {r['wall_s_max']:.3f}, "
              f"cpu {r['cpu_s_median']:.3f})  -> {r['source']} ({r['filter']})")
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "load_average": os.getloadavg(), "nice": os.nice(0), "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
