#!/bin/sh
# Mutation testing of the MIME guards (issue 12): the sanitizer's CSS filtering and remote-image
# checks (src/mailgate/mime/html.py) and the "unscannable" decision (mime/errors.py, the walk in
# mime/structure.py, the scan stage), with tests/test_mime_html.py and
# tests/test_mime_unscannable.py as the runner (the serve + SMTP test left out).
#
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
#   sh scripts/mutate_mime.sh css           # the sanitizer's CSS functions
#   sh scripts/mutate_mime.sh unscannable   # the unscannable decision
set -eu
group=${1:-css}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$repo" && git ls-files -z | xargs -0 -I{} cp --parents {} "$work/" 2>/dev/null || true
cat >> "$work/pyproject.toml" <<'CFG'

[tool.mutmut]
paths_to_mutate = ["src/mailgate/mime/html.py", "src/mailgate/mime/errors.py", "src/mailgate/pipeline/stages/scan.py", "src/mailgate/mime/structure.py"]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-k", "not over_smtp", "-x"]
pytest_add_cli_args_test_selection = ["tests/test_mime_html.py", "tests/test_mime_unscannable.py"]
also_copy = ["src", "fixtures", "tests", "config.example.toml", "README.md", "scripts", "docs"]
CFG
cd "$work"
if [ "$group" = css ]; then
    set -- "mailgate.mime.html.x_css*" "mailgate.mime.html.xǁSafeCSS*" \
        "mailgate.mime.html.x__is_remote*" "mailgate.mime.html.x__allow_attr*"
    pattern='mailgate\.mime\.html\.(x_css|x__is_remote|x__allow_attr|xǁSafeCSS)'
else
    set -- "mailgate.mime.errors*" "mailgate.pipeline.stages.scan.x_unscannable_finding*" \
        "mailgate.pipeline.stages.scan.x_scanned_files*" "mailgate.pipeline.stages.scan.x__zip_scan*" \
        "mailgate.mime.structure.xǁWalkerǁ_visit*" "mailgate.mime.structure.xǁWalkerǁ_forward*" \
        "mailgate.mime.structure.xǁWalkerǁ_tnef*" "mailgate.mime.structure.xǁWalkerǁwalk*" \
        "mailgate.mime.structure.x_parse_tree*" "mailgate.mime.structure.x__holds_part_headers*" \
        "mailgate.mime.structure.x__opens_part_after_close*"
    pattern='mailgate\.(mime\.errors|pipeline\.stages\.scan\.x_(unscannable_finding|scanned_files|_zip_scan)|mime\.structure\.(xǁWalkerǁ(_visit|_forward|_tnef|walk)|x_parse_tree|x__holds_part_headers|x__opens_part_after_close))'
fi
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@" >run.log 2>&1 || true
mutmut results --all true 2>/dev/null | grep -E "$pattern" >results.txt || true
echo "killed:   $(grep -c ': killed' results.txt || true)"
echo "timeout:  $(grep -c ': timeout' results.txt || true)"
echo "survived: $(grep -c ': survived' results.txt || true)"
grep ': survived' results.txt | sed 's/: survived//' | while read -r name; do
    echo "--- $name"
    mutmut show "$name" </dev/null 2>/dev/null | grep -E '^[-+][^-+]' || true
done
