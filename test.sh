#!/usr/bin/env bash
# Run the whole test suite from a fresh clone:   sudo ./test.sh
#
#   sudo ./test.sh                  unit tests, then the integration suite on Debian 12
#   sudo ./test.sh --matrix         unit tests, then the integration suite on every supported OS
#   sudo ./test.sh --unit           unit tests only
#   sudo ./test.sh --integration    integration tests only (combine with --matrix or --os OS)
#   sudo ./test.sh --os ubuntu-24.04 ...   integration suite on the given OS(es) (repeatable)
#   sudo ./test.sh --workers 1      integration tests one at a time (default: $TLJH_TEST_WORKERS, or 4)
#   sudo ./test.sh -- -k harness -x       everything after the options (or after --) goes to every pytest run
#
# It installs the host packages it needs (apt-get), creates .venv-test with the host's python3, installs this
# package (editable) and dev-requirements.txt into it with uv, builds or reuses the cached OS images
# (/var/tmp/tljh-test-images), and runs pytest; integration tests run in several machines at once
# (pytest-xdist). Exit status is non-zero if any stage fails; "no tests collected" (pytest exit code 5) is a
# failure too. Ctrl-C or SIGTERM stops the run and tears its machines down.
# The whole script is one { ... } block: bash parses it completely before running it, so editing this
# file during a run (a long integration run, say) cannot break that run.
{
set -uo pipefail

cd "$(dirname "$(readlink -f "$0")")" || exit 1
ALL_OSES=(debian-12 debian-13 ubuntu-22.04 ubuntu-24.04)
DEFAULT_OS=debian-12
HOST_PACKAGES=(systemd-container debootstrap zstd git python3 python3-venv ca-certificates pebble openssl iproute2 nftables chromium)
VENV=.venv-test
# 4 workers on a 2-core host: see docs/howto/test-machine.md for the measurement
WORKERS=${TLJH_TEST_WORKERS:-4}

run_unit=1
run_integration=1
oses=()
pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --matrix) oses=("${ALL_OSES[@]}") ;;
        --unit) run_integration=0 ;;
        --integration) run_unit=0 ;;
        --os) shift; IFS=, read -r -a more <<<"${1:?--os needs an OS name}"; oses+=("${more[@]}") ;;
        --os=*) IFS=, read -r -a more <<<"${1#--os=}"; oses+=("${more[@]}") ;;
        --workers) shift; WORKERS=${1:?--workers needs a number} ;;
        --workers=*) WORKERS=${1#--workers=} ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; pytest_args+=("$@"); break ;;
        *) pytest_args+=("$1") ;;
    esac
    shift
done
[ ${#oses[@]} -gt 0 ] || oses=("$DEFAULT_OS")
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
    echo "test.sh: --workers / TLJH_TEST_WORKERS must be a positive number, not '$WORKERS'" >&2
    exit 2
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: must run as root (it installs packages and boots systemd-nspawn machines): sudo ./test.sh" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
export PYTHONDONTWRITEBYTECODE=1
# Trust the system CA store (which may hold a local proxy's CA) in pip and uv.
if [ -z "${PIP_CERT:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
export UV_NATIVE_TLS=1

stage_names=()
stage_results=()
stage_times=()
failed=0

now() { date +%s.%N; }

# stage NAME COMMAND... : run a stage, record its result and duration
stage() {
    local name=$1; shift
    echo
    echo "=================== $name ==================="
    local rc
    current_stage=$name
    current_t0=$(now)
    "$@"
    rc=$?
    current_stage=
    stage_names+=("$name")
    stage_times+=("$(awk -v a="$current_t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')")
    if [ $rc -eq 0 ]; then
        stage_results+=("ok")
    else
        if [ $rc -eq 5 ]; then stage_results+=("FAILED (rc 5: no tests collected)"); else stage_results+=("FAILED (rc $rc)"); fi
        failed=1
    fi
    return $rc
}

summary() {
    echo
    echo "=================== summary ==================="
    local i
    for i in "${!stage_names[@]}"; do
        printf '  %-34s %-36s %8ss\n' "${stage_names[$i]}" "${stage_results[$i]}" "${stage_times[$i]}"
    done
    printf '  %-34s %-36s %8ss\n' "total" "$([ $failed -eq 0 ] && echo ok || echo FAILED)" \
        "$(awk -v a="$T_START" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
}

host_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "host packages present: ${HOST_PACKAGES[*]}"
        return 0
    fi
    echo "installing host packages: ${missing[*]}"
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
}

python_env() {
    local py=${PYTHON:-python3}
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || return 1
    fi
    if [ ! -x "$VENV/bin/uv" ]; then
        "$VENV/bin/python" -m pip install -q uv || return 1
    fi
    VIRTUAL_ENV="$PWD/$VENV" "$VENV/bin/uv" pip install --quiet --native-tls --python "$VENV/bin/python" \
        -e '.[conda]' -r dev-requirements.txt || return 1
    "$VENV/bin/python" --version
}

pytest_pid=
pytest_run() {
    # -ra: list every test that did not pass; --durations: where the time goes.
    # In the background, so that a SIGTERM to this script is handled at once (bash runs traps only between
    # foreground commands) and passed on to pytest, which then tears its machines down.
    "$VENV/bin/python" -m pytest -ra --durations=10 "$@" &
    pytest_pid=$!
    wait "$pytest_pid"
    local rc=$?
    pytest_pid=
    return $rc
}

integration_run() {
    local os=$1; shift
    local parallel=()
    # -v: with workers, the per-file progress lines are gone; one line per test says what finished where
    [ "$WORKERS" -gt 1 ] && parallel=(-n "$WORKERS" --dist loadgroup -v)
    pytest_run integration-tests/ --os "$os" "${parallel[@]}" "$@"
}

# Stop the running pytest (the controller and its xdist workers, by pid) like Ctrl-C, and wait while they
# tear their machines down; then remove what a worker killed too early may have left.
stop_pytest() {
    [ -n "$pytest_pid" ] && kill -0 "$pytest_pid" 2>/dev/null || return 0
    echo "test.sh: stopping pytest (pid $pytest_pid) and its workers; their machines are being torn down"
    kill -TERM "$pytest_pid" $(ps -o pid= --ppid "$pytest_pid") 2>/dev/null
    wait "$pytest_pid"
    "$VENV/bin/python" integration-tests/machine.py gc
}

T_START=$(now)
current_stage=
interrupted() {
    trap '' INT TERM  # a second Ctrl-C must not cut the teardown short
    echo
    echo "test.sh: interrupted"
    stop_pytest
    if [ -n "$current_stage" ]; then
        stage_names+=("$current_stage")
        stage_results+=("INTERRUPTED")
        stage_times+=("$(awk -v a="$current_t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')")
    fi
    failed=1
    summary
    exit 130
}
trap interrupted INT TERM

stage "host packages" host_packages || { summary; exit 1; }
stage "python test env ($VENV)" python_env || { summary; exit 1; }

if [ $run_unit -eq 1 ]; then
    stage "unit tests (tests/)" pytest_run tests/ "${pytest_args[@]}"
fi

if [ $run_integration -eq 1 ]; then
    for os in "${oses[@]}"; do
        if stage "image $os" "$VENV/bin/python" integration-tests/machine.py build "$os"; then
            stage "integration $os ($WORKERS workers)" integration_run "$os" "${pytest_args[@]}"
        fi
    done
fi

summary
exit $failed
}
