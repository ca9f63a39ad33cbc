"""Regenerate the README's configuration reference from config.example.toml.

    python scripts/config_reference.py          # rewrite README.md in place
    python scripts/config_reference.py --check  # exit 1 if README.md is out of date

The example file is the one commented schema (Mailman's schema.cfg); the README table is derived
from it so the two cannot drift (tests/test_config.py runs --check).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def reference(example: str) -> str:
    rows: list[tuple[str, str, str, str]] = []
    section = ""
    last: list[str] | None = None
    for line in example.splitlines():
        header = re.match(r"^\[\[?([a-z0-9_.]+)\]\]?", line)
        if header:
            section = header.group(1)
            last = None
            continue
        m = re.match(r"^([a-z0-9_.]+)\s*=\s*(.*?)\s*(?:#\s?(.*))?$", line)
        if m and section:
            key, value, doc = m.group(1), m.group(2), m.group(3) or ""
            if value.count('"') % 2 == 1:  # a '#' inside a quoted value
                value, doc = line.split("=", 1)[1].strip(), ""
            row = [section, key, value, doc]
            rows.append(row)  # type: ignore[arg-type]
            last = row
            continue
        cont = re.match(r"^\s+#\s?(.*)$", line)
        if cont and last is not None:
            last[3] = f"{last[3]} {cont.group(1)}".strip()
        elif not line.strip():
            last = None
    out = ["| section | key | default / example | meaning |", "|---|---|---|---|"]
    for section, key, value, doc in rows:
        value = value.replace("|", "\\|")
        doc = doc.replace("|", "\\|")
        out.append(f"| `[{section}]` | `{key}` | `{value}` | {doc} |")
    return "\n".join(out)


def render(readme: str, example: str) -> str:
    block = f"{START}\n{reference(example)}\n{END}"
    if START in readme:
        return re.sub(
            re.escape(START) + r".*?" + re.escape(END), lambda _: block, readme, flags=re.S
        )
    return readme.replace("CONFIG_REFERENCE", block)


def main() -> int:
    readme_path = ROOT / "README.md"
    readme = readme_path.read_text()
    new = render(readme, (ROOT / "config.example.toml").read_text())
    if "--check" in sys.argv:
        if new != readme:
            print(
                "README.md configuration reference is out of date: run python scripts/config_reference.py"
            )
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
