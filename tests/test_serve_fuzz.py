"""A property-based fuzz of the HTTP API from its own OpenAPI schema (schemathesis, on hypothesis): every operation,
with requests that fit the schema and requests that break it (wrong types, missing fields, out-of-range values,
random bytes for the uploaded images), sent in-process to the ASGI app over a pipeline stand-in (nothing leaves
the process). No answer may be a 5xx or carry a traceback. Deterministic (derandomized), bounded in cases and time;
the case count is printed."""
from __future__ import annotations

import time

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from minicream.serve import ServeSettings, create_app
from serve_fakes import FakeEditPipe

CASES = 60          # per operation and generation mode
TIME_BUDGET = 45.0  # seconds for the whole fuzz; it stops early (and says so) rather than run past it


def test_no_input_gets_a_5xx_or_a_traceback(tmp_path, capsys):
    from schemathesis.python.asgi import HOST  # the name its in-process client sends as Host

    app = create_app(FakeEditPipe(), ServeSettings(output_dir=tmp_path / "out", token=None, max_saved=20,
                                                   allowed_hosts=(HOST,)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    sent, stopped, failures, start = [0], [False], [], time.monotonic()

    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def fuzz(case):
                if time.monotonic() - start > TIME_BUDGET:
                    stopped[0] = True
                    return
                response = case.call()
                sent[0] += 1
                text = response.text
                if response.status_code >= 500 or "Traceback" in text:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {text[:200]}")

            try:
                fuzz()
            except Exception as e:  # an operation whose negative cases cannot be generated: the positive ones ran
                if mode is GenerationMode.POSITIVE:
                    raise
                assert "Unsatisfiable" in type(e).__name__ or "unsatisfiable" in str(e).lower(), e
    took = time.monotonic() - start
    with capsys.disabled():
        print(f"\nHTTP API fuzz: {sent[0]} cases over {len(operations)} operations in {took:.1f} s"
              f"{' (stopped at the time budget)' if stopped[0] else ''}, {len(failures)} with a 5xx or a traceback")
    assert not failures, failures[:5]
    assert sent[0] >= 10 * len(operations) and took < TIME_BUDGET + 15
