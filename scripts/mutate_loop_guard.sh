#!/bin/sh
# Mutation testing of the auto-responder's loop protection (src/mailgate/reply/guard.py: which
# mail must never be acknowledged, RFC 3834), with its unit tests as the runner.
#
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
# The copy puts src/ first on pytest's path: mailgate is installed editable from the real tree,
# which would otherwise shadow the mutated copy.
#   sh scripts/mutate_loop_guard.sh    # prints the killed/survived counts and the survivors
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/src" "$repo/tests" "$repo/fixtures" "$repo/docs" "$repo/pyproject.toml" "$work/"
rm -rf "$work"/src/*.egg-info
cd "$work"
sed -i 's/^pythonpath = \["."\]/pythonpath = [".", "src"]/' pyproject.toml
cat >> pyproject.toml <<'CFG'

[tool.mutmut]
source_paths = ["src/mailgate/reply/guard.py"]
pytest_add_cli_args_test_selection = ["tests/test_reply_guard.py", "tests/test_reply_units.py"]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x"]
also_copy = ["docs", "fixtures", "tests", "src"]
CFG
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" >run.log 2>&1 || true
mutmut results --all true >results.txt 2>/dev/null || true
killed=$(grep -c ': killed' results.txt || true)
total=$(grep -c ': ' results.txt || true)
echo "killed ${killed} of ${total} mutants"
grep -v ': killed' results.txt || true
if [ -n "${MUTMUT_SHOW:-}" ]; then
    grep -v ': killed' results.txt | sed 's/:.*//' | while read -r name; do
        mutmut show "$name" 2>/dev/null | grep '^[-+][^-+]' || true
    done
fi
