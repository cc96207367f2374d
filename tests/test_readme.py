"""The README's commands are the ones CI and users run."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _first_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    test_cmd = _first_block()[-1]
    assert test_cmd == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci]


def test_readme_main_command_uses_bundled_files():
    run = next(c for c in _first_block() if c.startswith("sair-inpaint"))
    for arg in run.split()[1:3]:
        assert (ROOT / arg).is_file(), arg
