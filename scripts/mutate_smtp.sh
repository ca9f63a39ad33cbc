#!/bin/sh
# Mutation testing of the listener's protocol guards (issue 16, smtp/session.py): command-line
# limits, the error and unknown-command budgets, require_tls, STARTTLS's plaintext drop, the
# DATA reader (terminator, dot-stuffing, size and line limits), the pregreet test and the DATA
# deadlines, with the SMTP tests as the runner (real sockets, a real store).
#
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
#   sh scripts/mutate_smtp.sh            # prints the killed/survived counts and survivors
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/src" "$repo/tests" "$repo/pyproject.toml" "$work/"
[ -d "$repo/fixtures" ] && cp -r "$repo/fixtures" "$work/"
rm -rf "$work"/src/*.egg-info
cd "$work"
sed -i 's/^pythonpath = \["."\]/pythonpath = [".", "src"]/' pyproject.toml
cat >> pyproject.toml <<'CFG'

[tool.mutmut]
source_paths = ["src/mailgate/smtp/session.py"]
pytest_add_cli_args_test_selection = ["tests/test_smtp_session.py", "tests/test_smtp_hostile.py", "tests/test_smtp_listener.py"]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-x"]
also_copy = ["fixtures", "tests", "src"]
CFG
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_command*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_reply*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_process*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_feed_data*" \
    "mailgate.smtp.session.xǁSmtpSessionǁsmtp_STARTTLS*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_greet*" >run.log 2>&1 || true
mutmut results --all true >results.txt 2>/dev/null || true
echo "killed:   $(grep -c ': killed' results.txt || true)"
echo "survived: $(grep -c ': survived' results.txt || true)"
echo "timeout:  $(grep -c ': timeout' results.txt || true)"
grep ': survived' results.txt | while read -r name _; do
    name=${name%:}
    echo "--- $name"
    mutmut show "$name" 2>/dev/null | grep -a '^[-+][^-+]' || true
done
