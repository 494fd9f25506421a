"""The README's API examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = README.parent


def python_blocks() -> list[str]:
    """The README's ```python code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def run_script(source: str, cwd: Path) -> str:
    """Run ``source`` as a script in ``cwd`` (the project importable); return stdout."""
    script = cwd / "example.py"
    script.write_text(source)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_model_and_runtime_examples_run(tmp_path: Path) -> None:
    """The modelling example plus the runtime example run and print the balance."""
    blocks = python_blocks()
    model = next(b for b in blocks if "class Account(Aggregate" in b)
    actors = next(b for b in blocks if "anyio.run(main)" in b)
    out = run_script(model + "\n" + actors, tmp_path)
    assert "\n100\n" in out
    assert (tmp_path / "events.db").exists()


def test_read_model_example_runs(tmp_path: Path) -> None:
    """The read-model example (its top-level awaits wrapped in a function) runs."""
    blocks = python_blocks()
    model = next(b for b in blocks if "class Account(Aggregate" in b)
    reads = next(b for b in blocks if "account_balances(" in b)
    body = "\n".join("    " + line for line in reads.splitlines())
    out = run_script(
        f"{model}\nimport anyio\n\nasync def _example():\n{body}\n\nanyio.run(_example)\n", tmp_path
    )
    assert "balance=100" in out
    assert list((tmp_path / "read-models").iterdir())
