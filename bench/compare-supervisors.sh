#!/usr/bin/env bash
# Watcher figures of circuit beside Circus and supervisord (issue 5), measured in
# one run on this machine by the same code (bench/compare_supervisors.py):
#   respawn after kill -9 (median of 20), start of 100 processes, daemon RSS and
#   idle CPU (20 s) with 100 processes; then the ratios Circus/circuit and
#   supervisord/circuit.
# Circus and supervisor are pip-installed into a fresh virtualenv in a temp dir
# (nothing system-wide); a failed install is reported and that system skipped.
# Only loopback and unix sockets in the temp dir are used. Every daemon runs in
# its own process group; at exit the trap kills what the run started (by pid,
# checked against its start time, and its group) and removes the temp dir.
#
# Usage: bench/compare-supervisors.sh   (from anywhere; about 4 minutes)
# Env: KILLS (default 20), IDLE seconds (default 20), PIP_TIMEOUT (default 300).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
helper="$root/bench/compare_supervisors.py"
kills=${KILLS:-20}
idle=${IDLE:-20}
pip_timeout=${PIP_TIMEOUT:-300}

tmp=$(mktemp -d /tmp/cmpsup.XXXXXX) || exit 1
py=python3
cleanup() {
    trap - EXIT INT TERM
    if [[ -n ${helper_pid:-} ]] && kill -0 "$helper_pid" 2>/dev/null; then
        kill -TERM "$helper_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$helper_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$helper_pid" 2>/dev/null
    fi
    # Whatever the helper could not stop: the daemons it recorded, their trees.
    [[ -f $tmp/pids ]] && timeout 30 "$py" "$helper" --tmp "$tmp" --circuit none --cleanup
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "temp dir: $tmp" >&2

# circuit, release build.
if ! (cd "$root" && timeout 1800 cargo build --release -p circuit >&2); then
    echo "cargo build --release -p circuit failed" >&2
    exit 1
fi
circuit="$root/target/release/circuit"

# Circus and supervisor from PyPI, into a fresh virtualenv.
systems=circuit
versions=
venv="$tmp/venv"
if timeout 120 python3 -m venv "$venv" >"$tmp/venv.log" 2>&1; then
    py="$venv/bin/python"
    for pkg in circus supervisor; do
        if timeout "$pip_timeout" "$venv/bin/pip" install --disable-pip-version-check -q "$pkg" \
            >"$tmp/pip-$pkg.log" 2>&1; then
            v=$("$venv/bin/pip" show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
            versions+="$pkg=$v,"
            case $pkg in
                circus) systems+=,circus ;;
                supervisor) systems+=,supervisord ;;
            esac
            echo "installed $pkg $v" >&2
        else
            echo "pip install $pkg failed (status $?); measuring without it:" >&2
            tail -n 5 "$tmp/pip-$pkg.log" >&2
        fi
    done
else
    echo "python3 -m venv failed; measuring circuit only:" >&2
    tail -n 5 "$tmp/venv.log" >&2
fi

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -sr)" >&2
# The helper stops its daemons itself (finally blocks); the trap is the fallback.
"$py" "$helper" --tmp "$tmp" --circuit "$circuit" --venv "$venv" \
    --systems "$systems" --versions "$versions" --kills "$kills" --idle "$idle" &
helper_pid=$!
wait "$helper_pid"
status=$?
helper_pid=
exit "$status"
