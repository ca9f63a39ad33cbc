#!/bin/sh
# Mutation testing of the intent classifier (issue 17): mutmut over the signal table
# (src/mailgate/pipeline/intent_signals.py) and the stage that combines it
# (src/mailgate/pipeline/stages/intent.py), with the intent tests as the runner.
#
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
# The copy puts src/ first on pytest's path: mailgate is installed editable from the real tree,
# which would otherwise shadow the mutated copy.
#   sh scripts/mutate_intent.sh        # prints the killed/survived counts and the score
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
source_paths = ["src/mailgate/pipeline/intent_signals.py", "src/mailgate/pipeline/stages/intent.py"]
pytest_add_cli_args_test_selection = ["tests/test_intent_signals.py", "tests/test_pipeline_stages.py"]
also_copy = ["docs", "fixtures", "tests", "src"]
CFG
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" >run.log 2>&1 || true
mutmut results --all true >results.txt 2>/dev/null || true
killed=$(grep -c ': killed' results.txt || true)
total=$(grep -c ': ' results.txt || true)
echo "killed ${killed} of ${total} mutants"
grep -v ': killed' results.txt || true
