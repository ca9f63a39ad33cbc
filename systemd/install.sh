#!/bin/sh
# Install mailgate as a systemd service (Debian 12, Ubuntu 24.04), from this source tree.
#
#   sudo systemd/install.sh                   # venv in /opt/mailgate, user, config, state dir, unit
#   systemd/install.sh --prefix /tmp/stage    # the same layout under a directory, for tests
#
# A virtual environment, because Debian and Ubuntu refuse `pip install` into the system Python
# (PEP 668). Idempotent: a second run with the same source changes nothing; an existing
# /etc/mailgate/mailgate.toml is never overwritten. See README "Running under systemd".
set -eu
umask 022 # the venv and the unit are read by the service user; private files set their own mode

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --prefix DIR             install every path under DIR (the paths written in the unit too);
                           no useradd, chown or systemctl. For tests and staging.
  --venv DIR               the virtual environment (default /opt/mailgate)
  --python PY              the Python that creates the venv (default python3; 3.11 or newer)
  --system-site-packages   let the venv use the dependencies already installed in the
                           system Python instead of downloading them
  --no-enable              do not enable the unit
  --no-start               do not start (or restart) the service
  -h, --help               this text
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

PREFIX=""
VENV=/opt/mailgate
PYTHON=python3
SYSTEM_SITE=no
ENABLE=yes
START=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --venv) [ $# -ge 2 ] || die "--venv needs a directory"; VENV=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs a program"; PYTHON=$2; shift 2 ;;
        --system-site-packages) SYSTEM_SITE=yes; shift ;;
        --no-enable) ENABLE=no; shift ;;
        --no-start) START=no; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case "$VENV" in /*) ;; *) die "--venv must be an absolute path: $VENV" ;; esac
if [ -n "$PREFIX" ]; then
    mkdir -p "$PREFIX"
    PREFIX=$(cd "$PREFIX" && pwd)
fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/systemd/mailgate.service" ] ||
    die "run it from a mailgate source tree (no pyproject.toml in $SRC)"

# System changes (user, ownership, systemctl) only for a real install as root.
SYSTEM=no
if [ -z "$PREFIX" ]; then
    [ "$(id -u)" -eq 0 ] || die "run as root, or give --prefix DIR for a staged install"
    SYSTEM=yes
fi

# Final paths (what the unit names) and where they are written (under the prefix, if any).
CONF_DIR=/etc/mailgate
CONF=$CONF_DIR/mailgate.toml
STATE=/var/lib/mailgate
UNIT_DIR=/etc/systemd/system
if [ -n "$PREFIX" ]; then
    VENV=$PREFIX$VENV
    CONF_DIR=$PREFIX$CONF_DIR
    CONF=$PREFIX$CONF
    STATE=$PREFIX$STATE
    UNIT_DIR=$PREFIX$UNIT_DIR
fi
UNIT=$UNIT_DIR/mailgate.service
SERVICE_USER=mailgate

say() { echo "install.sh: $*"; }

# --------------------------------------------------------------------------- the venv
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than 3.11 (mailgate needs 3.11+)"
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    if [ "$SYSTEM_SITE" = yes ]; then
        "$PYTHON" -m venv --system-site-packages "$VENV" ||
            die "cannot create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
    else
        "$PYTHON" -m venv "$VENV" ||
            die "cannot create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    say "created the virtual environment $VENV"
fi

# The source's fingerprint: pip runs again only when the source changed since the last install.
fingerprint() {
    (
        cd "$SRC"
        find pyproject.toml README.md src -type f \
            ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' | LC_ALL=C sort |
            while IFS= read -r f; do sha256sum "$f"; done | sha256sum | cut -d' ' -f1
    )
}
STAMP=$VENV/.mailgate-source
WANT=$(fingerprint)
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ] || [ ! -x "$VENV/bin/mailgate" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$SRC"
    echo "$WANT" >"$STAMP"
    INSTALLED=yes
    say "installed mailgate into $VENV"
else
    INSTALLED=no
    say "mailgate in $VENV is up to date"
fi
"$VENV/bin/mailgate" --help >/dev/null || die "$VENV/bin/mailgate does not run"

# Write $2 from the file $1 only when the content differs (a second run touches nothing).
put() {
    if ! cmp -s "$1" "$2"; then
        mkdir -p "$(dirname "$2")"
        cp "$1" "$2.new"
        chmod 0644 "$2.new"
        mv -f "$2.new" "$2"
        say "wrote $2"
    fi
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# The README beside the venv: the unit's Documentation= points at it.
put "$SRC/README.md" "$VENV/share/doc/mailgate/README.md"

# --------------------------------------------------------------------------- user
if [ "$SYSTEM" = yes ] && ! getent passwd "$SERVICE_USER" >/dev/null; then
    NOLOGIN=$(command -v nologin || echo /usr/sbin/nologin)
    if getent group "$SERVICE_USER" >/dev/null; then
        GROUP_OPT="--gid $SERVICE_USER"
    else
        GROUP_OPT="--user-group"
    fi
    # shellcheck disable=SC2086 # GROUP_OPT is one or two words on purpose
    useradd --system $GROUP_OPT --home-dir /var/lib/mailgate --no-create-home \
        --shell "$NOLOGIN" --comment "mailgate SMTP ingestion" "$SERVICE_USER"
    say "created the system user $SERVICE_USER"
fi

# --------------------------------------------------------------------------- config
if [ ! -d "$CONF_DIR" ]; then
    mkdir -p "$CONF_DIR"
    chmod 0755 "$CONF_DIR"
fi
if [ ! -e "$CONF" ]; then
    # The example, with the data dir set to the state directory (so `mailgate ... -c CONF`
    # from any directory finds the server's store).
    sed "s#^data_dir *= *\"[^\"]*\"#data_dir = \"$STATE\"#" \
        "$SRC/config.example.toml" >"$TMP/mailgate.toml"
    grep -q "^data_dir = \"$STATE\"" "$TMP/mailgate.toml" ||
        die "config.example.toml has no data_dir line to point at $STATE"
    cp "$TMP/mailgate.toml" "$CONF.new"
    chmod 0640 "$CONF.new"
    if [ "$SYSTEM" = yes ]; then
        chgrp "$SERVICE_USER" "$CONF.new"
    fi
    mv "$CONF.new" "$CONF"
    say "wrote $CONF from config.example.toml: edit it (domains, tokens) before starting"
fi

# --------------------------------------------------------------------------- state dir
if [ ! -d "$STATE" ]; then
    mkdir -p "$STATE"
    say "created $STATE"
fi
[ "$(stat -c %a "$STATE")" = 750 ] || chmod 0750 "$STATE"
if [ "$SYSTEM" = yes ] &&
    [ "$(stat -c %U:%G "$STATE")" != "$SERVICE_USER:$SERVICE_USER" ]; then
    chown "$SERVICE_USER:$SERVICE_USER" "$STATE"
fi

# --------------------------------------------------------------------------- unit
# The shipped unit names /opt/mailgate, /etc/mailgate and /var/lib/mailgate; point them at
# this install.
sed -e "s#/opt/mailgate#$VENV#g" \
    -e "s#/etc/mailgate/#$CONF_DIR/#g" \
    -e "s#/var/lib/mailgate#$STATE#g" \
    "$SRC/systemd/mailgate.service" >"$TMP/mailgate.service"
UNIT_CHANGED=no
cmp -s "$TMP/mailgate.service" "$UNIT" || UNIT_CHANGED=yes
put "$TMP/mailgate.service" "$UNIT"

# --------------------------------------------------------------------------- systemd
if [ "$SYSTEM" = yes ] && [ -d /run/systemd/system ]; then
    [ "$UNIT_CHANGED" = no ] || systemctl daemon-reload
    if [ "$ENABLE" = yes ] && ! systemctl is-enabled --quiet mailgate; then
        systemctl enable --quiet mailgate
        say "enabled mailgate.service"
    fi
    if [ "$START" = yes ]; then
        if ! "$VENV/bin/mailgate" check-config "$CONF" >/dev/null 2>&1; then
            say "not starting: $CONF is not valid yet; see: $VENV/bin/mailgate check-config $CONF"
        elif ! systemctl is-active --quiet mailgate; then
            systemctl start mailgate
            say "started mailgate.service"
        elif [ "$INSTALLED" = yes ] || [ "$UNIT_CHANGED" = yes ]; then
            systemctl restart mailgate
            say "restarted mailgate.service (new code or unit)"
        fi
    fi
elif [ "$SYSTEM" = yes ]; then
    say "systemd is not running here: $UNIT is installed but not enabled or started"
fi
