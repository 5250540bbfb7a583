# Shared helpers for end-to-end scripts (sourced). Each script runs inside the
# test sandbox (tests/sandbox/run) and prints "N passed, N failed" at the end.

PASSED=0
FAILED=0
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KVMDRIVE=${KVMDRIVE_BIN:-$REPO/target/release/kvmdrive}

# Re-runs the calling script inside the sandbox unless already there.
ensure_sandbox() {
    if [ "${KVMDRIVE_SANDBOX:-}" != 1 ]; then
        exec "$REPO/tests/sandbox/run" -- "$0" "$@"
    fi
}

ok()   { PASSED=$((PASSED + 1)); echo "ok: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }

# check DESCRIPTION COMMAND...: passes when COMMAND exits 0; returns 1 after
# a failure (so `check ... || evidence` can say more).
check() {
    local what=$1; shift
    if "$@"; then ok "$what"; else fail "$what"; return 1; fi
}

# The bundled box (built once, cached by recipe hash).
bundled_box() {
    "$REPO/boxes/debian-12/build" | tail -n 1
}

finish() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
