#!/bin/sh
# Mutation testing of the reply/tenant guards (issue 12): mutmut over the return-path check
# (src/mailgate/reply/return_path.py) and the tenant mapping (RecipientPolicy and
# split_address in src/mailgate/smtp/policy.py), with their focused tests as the runner.
#
# Runs in a copy under a temporary directory, so no mutmut cache (mutants/) lands in the tree.
#   sh scripts/mutate_guards.sh            # prints the killed/survived counts and survivors
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$repo/src" "$repo/tests" "$repo/pyproject.toml" "$work/"
[ -d "$repo/fixtures" ] && cp -r "$repo/fixtures" "$work/"
cat > "$work/setup.cfg" <<'CFG'
[mutmut]
source_paths = src/mailgate
only_mutate =
    src/mailgate/reply/return_path.py
    src/mailgate/smtp/policy.py
pytest_add_cli_args_test_selection =
    tests/test_reply_paths.py
    tests/test_tenants.py
    -k
    not serve and not twenty and not tenant_and and not unconfigured_label
pytest_add_cli_args =
    -p
    no:cacheprovider
    -q
    -x
CFG
cd "$work"
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" \
    "mailgate.reply.return_path.*" \
    "mailgate.smtp.policy.xǁRecipientPolicyǁ*" \
    "mailgate.smtp.policy.x_split_address*" >run.log 2>&1 || true
echo "killed:   $(grep -ac '^🎉' run.log)"
echo "survived: $(grep -ac '^🙁' run.log)"
echo "timeout:  $(grep -ac '^⏰' run.log)"
grep -a '^🙁' run.log | while read -r _ name; do
    echo "--- $name"
    mutmut show "$name" | grep -a '^[-+][^-+]' || true
done
