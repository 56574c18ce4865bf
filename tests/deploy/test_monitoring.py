"""Controls for scripts/check-monitoring (scripts/test runs it on the real files): it really looks.
A misspelt metric in the dashboard, and an alert without `for:` or with an unclosed parenthesis,
each fail it with a message naming the problem. Needs the built broker (BROKER_BIN, as scripts/test
sets it, or target/debug/session-broker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "session-broker.json"
RULES = REPO / "deploy" / "prometheus" / "session-broker-rules.yaml"
BINARY = Path(os.environ.get("BROKER_BIN") or REPO / "target" / "debug" / "session-broker")

pytestmark = pytest.mark.skipif(not BINARY.exists(), reason=f"{BINARY} is not built (cargo build --bin session-broker)")


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "check-monitoring"), *args, str(BINARY)],
                          capture_output=True, text=True, timeout=120)


def test_the_shipped_files_pass() -> None:
    proc = check("--skip-promtool")
    assert proc.returncode == 0, proc.stderr


def test_a_misspelt_metric_in_the_dashboard_fails(tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    target = next(t for p in board["panels"] for t in p.get("targets", []) if "session_broker_" in t["expr"])
    target["expr"] = target["expr"].replace("session_broker_", "session_broker_x_", 1)
    broken = tmp_path / "dashboard.json"
    broken.write_text(json.dumps(board))
    proc = check("--skip-promtool", "--dashboard", str(broken))
    assert proc.returncode == 1
    assert "session_broker_x_" in proc.stderr and "is not a metric the broker exposes" in proc.stderr


def test_an_alert_without_for_or_with_an_unclosed_parenthesis_fails(tmp_path: Path) -> None:
    text = RULES.read_text()
    text = text.replace("        for: 15m\n", "", 1).replace("expr: absent(", "expr: absent((", 1)
    broken = tmp_path / "rules.yaml"
    broken.write_text(text)
    proc = check("--rules", str(broken), *([] if shutil.which("promtool") else ["--skip-promtool"]))
    assert proc.returncode == 1
    assert "no `for:`" in proc.stderr and "unclosed `(`" in proc.stderr
    if shutil.which("promtool"):
        assert "promtool check rules" in proc.stderr and "parse error" in proc.stderr
