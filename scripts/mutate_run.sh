#!/bin/sh
# Mutation testing with mutmut over SOURCES, with TESTS as the runner (used by
# mutate_intent.sh and mutate_loop_guard.sh):
#   sh scripts/mutate_run.sh "src/mailgate/x.py src/mailgate/y.py" "tests/test_x.py" [NAME ...]
# NAMEs (mutmut's mutant names or globs, e.g. "mailgate.x.x_func*") limit the run to those.
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
# The copy puts src/ first on pytest's path: mailgate is installed editable from the real tree,
# which would otherwise shadow the mutated copy. Prints the killed count and the survivors;
# MUTMUT_SHOW=1 also prints each survivor's diff.
set -eu
sources=$1
tests=$2
shift 2
toml_list() {
    sep=''
    printf '['
    for item in $1; do printf '%s"%s"' "$sep" "$item"; sep=', '; done
    printf ']'
}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/src" "$repo/tests" "$repo/fixtures" "$repo/docs" "$repo/pyproject.toml" "$work/"
rm -rf "$work"/src/*.egg-info
cd "$work"
sed -i 's/^pythonpath = \["."\]/pythonpath = [".", "src"]/' pyproject.toml
cat >> pyproject.toml <<CFG

[tool.mutmut]
source_paths = $(toml_list "$sources")
pytest_add_cli_args_test_selection = $(toml_list "$tests")
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x"]
also_copy = ["docs", "fixtures", "tests", "src"]
CFG
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@" >run.log 2>&1 || true
mutmut results --all true 2>/dev/null | grep -v ': not checked' >results.txt || true
killed=$(grep -c ': killed' results.txt || true)
total=$(grep -c ': ' results.txt || true)
echo "killed ${killed} of ${total} mutants"
grep -v ': killed' results.txt || true
if [ -n "${MUTMUT_SHOW:-}" ]; then
    grep -v ': killed' results.txt | sed 's/:.*//' | while read -r name; do
        mutmut show "$name" 2>/dev/null | grep '^[-+][^-+]' || true
    done
fi
