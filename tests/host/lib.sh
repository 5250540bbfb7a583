# Helpers for the `kvmdrive host` scenario scripts in tests/host (sourced). Each scenario
# re-runs itself inside tests/sandbox/run with the sandbox options it needs,
# records the real host's state first and checks afterwards that the sandbox
# left it untouched, and prints "N passed, N failed".

PASSED=0
FAILED=0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KVMDRIVE=${KVMDRIVE_BIN:-$REPO/target/release/kvmdrive}
[[ -x $KVMDRIVE ]] || KVMDRIVE=$REPO/target/debug/kvmdrive

ok()   { PASSED=$((PASSED + 1)); echo "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() {   # check DESCRIPTION COMMAND...: passes when COMMAND exits 0
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
not() { ! "$@"; }
finish() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED -eq 0 ]]
}
now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

# What the sandbox must not change on the real host.
host_state() {
    {
        stat -c '%U:%G %a' /dev/kvm 2>/dev/null
        readlink /etc/alternatives/iptables /etc/alternatives/ip6tables
        md5sum /etc/libvirt/qemu.conf /etc/libvirt/network.conf /var/lib/dpkg/alternatives/iptables 2>/dev/null
        cat /proc/sys/net/ipv4/ip_forward
        iptables-legacy-save 2>/dev/null | grep -v '^#' | md5sum
        ls /run/libvirt 2>/dev/null
        ls /run/kvmdrive 2>/dev/null
    } 2>&1
}

# in_sandbox SANDBOX-OPTIONS... -- "$@": run the calling script inside a
# sandbox (once), then compare the host's state before and after.
in_sandbox() {
    [[ ${KVMDRIVE_SANDBOX:-} == 1 ]] && return 0
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    local before after rc t0
    before=$(host_state)
    t0=$(now_ms)
    "$REPO/tests/sandbox/run" "${opts[@]}" -- "$0" "$@"
    rc=$?
    after=$(host_state)
    echo "scenario $(basename "$0"): $(( ($(now_ms) - t0) / 1000 )) s"
    if [[ $before != "$after" ]]; then
        echo "FAIL: the host's state changed:"; diff <(echo "$before") <(echo "$after")
        exit 1
    fi
    echo "host state unchanged (/dev/kvm, alternatives, qemu.conf, ip_forward, legacy rules, /run)"
    exit "$rc"
}

# kvmdrive's own files go to the sandbox's state dir, not the host's.
sandbox_env() {
    export KVMDRIVE_LOG_DIR=$KVMDRIVE_SANDBOX_DIR/kvmdrive-log
    export KVMDRIVE_CACHE_DIR=$KVMDRIVE_SANDBOX_DIR/kvmdrive-cache
}

# json EXPR: evaluates a Python expression over the JSON on stdin (as `j`).
json() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

# finding CHECK: "status" of that check in `host check --json` output on stdin.
finding() { json "next(f['status'] for f in j['findings'] if f['check']=='$1')"; }

# The box for guest tests: $KVMDRIVE_TEST_BOX, else the bundled recipe's.
test_box() {
    if [[ -n ${KVMDRIVE_TEST_BOX:-} ]]; then echo "$KVMDRIVE_TEST_BOX"; return; fi
    "$REPO/boxes/debian-12/build" | tail -n 1
}

# boot_vm NAME: `kvmdrive up` one machine of the test box in a fresh project
# and log in with `kvmdrive ssh`; prints the seconds it took.
boot_vm() {
    local box proj t0 rc=0
    box=$(test_box) || return 1
    proj=$(mktemp -d /tmp/kvmdrive-host-e2e.XXXXXX)
    printf 'defaults:\n  box: %s\n  memory: 512\nmachines:\n  - name: %s\n' "$box" "$1" >"$proj/kvmdrive.yml"
    t0=$(now_ms)
    "$KVMDRIVE" -C "$proj" up >&2 && "$KVMDRIVE" -C "$proj" ssh "$1" -- true >&2 || rc=1
    echo "boot of $1: $(( ($(now_ms) - t0) / 1000 )) s (up + ssh)" >&2
    "$KVMDRIVE" -C "$proj" destroy >&2 || rc=1
    rm -rf "$proj"
    return $rc
}
