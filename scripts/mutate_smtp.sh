#!/bin/sh
# Mutation testing of the listener's protocol guards (issue 16, smtp/session.py): command-line
# limits, the error and unknown-command budgets, require_tls, STARTTLS's plaintext drop, the
# DATA reader (terminator, dot-stuffing, size and line limits) and the pregreet test, with the
# SMTP tests as the runner (real sockets, a real store). Prints the killed count and the
# survivors; MUTMUT_SHOW=1 also prints each survivor's diff (see mutate_run.sh).
#   sh scripts/mutate_smtp.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/mutate_run.sh" "src/mailgate/smtp/session.py" \
    "tests/test_smtp_session.py tests/test_smtp_hostile.py tests/test_smtp_listener.py" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_command*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_reply*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_process*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_feed_data*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_data_limits*" \
    "mailgate.smtp.session.xǁSmtpSessionǁsmtp_STARTTLS*" \
    "mailgate.smtp.session.xǁSmtpSessionǁ_greet*"
