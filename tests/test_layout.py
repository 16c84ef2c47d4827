"""The extension lays out generated calls exactly as ``ruff format`` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ws_template_extension import LINE_LENGTH, call, formatted


def test_generated_calls_need_no_reformatting(tmp_path: Path) -> None:
    # The shapes the templates generate, with paths and names from short to very long.
    lines = []
    for length in range(1, 140, 3):
        path, name = f'"/ws/{"p" * length}/{{room}}"', f"endpoints.ws_{'n' * (length // 2)}"
        mount = call("app.include_router", call("create_router", path, name))
        route = call("router.add", path, name)
        lines.append(
            f"def mount_{length}():\n    {formatted(mount, 4)}\n    {formatted(route, 4)}\n"
        )
    source = tmp_path / "generated.py"
    source.write_text("\n\n".join(lines))
    ruff = [sys.executable, "-m", "ruff", "format", "--diff", "--isolated"]
    result = subprocess.run(
        [*ruff, "--line-length", str(LINE_LENGTH), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
