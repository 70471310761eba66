"""Every command the README shows, run exactly as written, in the order a newcomer types them.

The engine's block and the service's block run in one fresh folder (the service serves the model the
engine's block imported); the server started with `&` is waited for, as a person would, before the next line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("## The engine from the command line", "## The service")


def commands(section: str) -> list[str]:
    """The lines of the section's first ```bash block, without their trailing comments."""
    text = (REPO / "README.md").read_text()
    start = text.index(section)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block is not None, section
    lines = [re.sub(r"\s+#.*$", "", line).rstrip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def script(lines: list[str]) -> str:
    """A bash script of the lines; after a line that starts a server in the background, wait until it answers."""
    body = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for line in lines:
        body.append(line)
        if line.endswith("&"):
            body.append("curl --silent --fail --retry 120 --retry-connrefused --retry-delay 1 "
                        "http://127.0.0.1:8000/readyz > /dev/null")  # fmt: skip
    return "\n".join(body) + "\n"


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GISP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    for section in SECTIONS:
        done = subprocess.run(
            ["bash", "-c", script(commands(section))],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert done.returncode == 0, f"{section}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "smol" / "sparsity-0.3" / "gisp_manifest.json").is_file()
    assert (tmp_path / "runs" / "smol-0.25" / "gisp_manifest.json").is_file()
    assert (tmp_path / "report.json").is_file()
    downloaded = [p for p in (tmp_path / "ckpt").iterdir() if (p / "SHA256SUMS").is_file()]
    assert len(downloaded) == 2  # the selected point and the one downloaded by sparsity
