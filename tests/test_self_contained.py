"""The test suite needs nothing outside the repository.

A fresh ``git clone`` of the committed HEAD, in a temporary directory with no ``../shared``
beside it, runs a fast subset of the suite that reads the fixture corpus (the RFC 7208 SPF
suite, the MIME differential test) and the config tests, with the clone's own ``src`` first on
the path. It must pass with nothing skipped: a fixture that is only in the working tree, or
only beside it, fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ["tests/test_auth_spf.py", "tests/test_mime_differential.py", "tests/test_config.py"]
TIMEOUT = 240


def _clone(dest: Path) -> Path:
    git = shutil.which("git")
    assert git, "git is needed to prove the suite runs from a fresh clone"
    clone = dest / "clone"
    subprocess.run(
        [git, "clone", "--quiet", str(ROOT), str(clone)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return clone


def test_fresh_clone_passes_without_anything_beside_it(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    assert not (clone.parent / "shared").exists()
    assert (clone / "fixtures" / "corpus" / "MANIFEST.txt").is_file()
    env = {**os.environ, "PYTHONPATH": str(clone / "src")}
    env.pop("MAILGATE_CONFIG", None)
    env.pop("MAILGATE_DATA_DIR", None)

    where = subprocess.run(
        [sys.executable, "-c", "import mailgate; print(mailgate.__file__)"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(clone / "src"), where.stdout

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", *SUBSET],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    summary = out.strip().splitlines()[-1]
    assert "skipped" not in out.lower(), out[-4000:]
    # The subset really ran the corpus tests: the RFC 7208 suite alone is 203 cases.
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 200, summary
    assert re.search(r"mime differential: 2\d\d messages", out), out[-2000:]
