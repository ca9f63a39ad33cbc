#!/bin/sh
# Mutation testing of the intent classifier (issue 17): mutmut over the signal table
# (src/mailgate/pipeline/intent_signals.py) and the stage that combines it
# (src/mailgate/pipeline/stages/intent.py), with the intent tests as the runner.
#   sh scripts/mutate_intent.sh        # prints the killed count and the survivors
exec sh "$(dirname "$0")/mutate_run.sh" \
    "src/mailgate/pipeline/intent_signals.py src/mailgate/pipeline/stages/intent.py" \
    "tests/test_intent_signals.py tests/test_pipeline_stages.py"
