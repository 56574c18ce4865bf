"""A short soak (20 s) in CI: tests/soak/soak.py with Redis paused and restarted while 24 conversations
reconnect on every call across two replicas; it must end with zero mixed calls and zero lost bindings
in the backend's own audit. The long run is documented in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import broker_binary

SOAK = Path(__file__).resolve().parents[1] / "soak" / "soak.py"


def test_short_soak_mixes_nothing_and_loses_nothing() -> None:
    env_bin = broker_binary()
    run = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "20", "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "BROKER_BIN": env_bin},
    )
    assert run.stdout.strip(), f"no summary; stderr:\n{run.stderr[-4000:]}"
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["mixed_in_replies"] == 0 and summary["wrong_project_in_audit"] == 0, (summary, run.stderr[-4000:])
    assert summary["lost_bindings"] == 0, (summary, run.stderr[-4000:])
    assert summary["ok"] > 200 and summary["audited"] >= summary["ok"], summary
    assert sum(summary["faults"].values()) >= 2, f"faults were not injected: {summary}"
    assert run.returncode == 0, (summary, run.stderr[-4000:])
