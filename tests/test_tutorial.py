"""docs/TUTORIAL.md cannot rot: its shell blocks run, in order, in a fresh folder."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "TUTORIAL.md"
NEEDS = [m for m in ("optuna", "mlflow") if importlib.util.find_spec(m) is None]


def shell_blocks(text: str) -> list[str]:
    """The ```bash blocks of a Markdown text, in order."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def test_the_tutorial_has_its_steps():
    blocks = shell_blocks(TUTORIAL.read_text())
    assert len(blocks) == 6 and "models check" in blocks[0] and "--mlflow" in blocks[4]


@pytest.mark.skipif(bool(NEEDS) and not os.environ.get("MNIST_LAB_REQUIRE_MLFLOW"),
                    reason=f"the tutorial needs {', '.join(NEEDS)}")
def test_the_tutorial_runs_as_written(tmp_path, data_root, script):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_LAB_RUNS"}  # its ./runs
    env |= {"MNIST_LAB_DATA": str(data_root), "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1", "PATH": f"{Path(script).parent}{os.pathsep}{env['PATH']}"}
    body = "\n".join(shell_blocks(TUTORIAL.read_text()))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "ok" in out.lower() and '"digit"' in out
    assert (tmp_path / "runs" / "reports" / "mystudy-quick" / "report.html").exists()
    assert (tmp_path / "mlflow.db").exists()
