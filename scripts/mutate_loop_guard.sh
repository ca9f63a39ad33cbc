#!/bin/sh
# Mutation testing of the auto-responder's loop protection (src/mailgate/reply/guard.py: which
# mail must never be acknowledged, RFC 3834), with its unit tests as the runner.
#   sh scripts/mutate_loop_guard.sh    # prints the killed count and the survivors
exec sh "$(dirname "$0")/mutate_run.sh" "src/mailgate/reply/guard.py" \
    "tests/test_reply_guard.py tests/test_reply_units.py"
