#!/usr/bin/env bash
# End to end, inside the sandbox: Molecule with the driver's `reuse: true` on
# the sample role's one-platform scenario. `molecule test` twice: the first
# boots and parks the machine, the second reverts to its pristine snapshot
# (no boot; timings printed, not asserted); `molecule reset` removes the
# parked machine: no domain, network, volume or parked state left.
# The venv (tests/molecule-venv; KVMDRIVE_VENV picks another) must exist:
# running this script outside the sandbox makes it.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
if [ "${KVMDRIVE_SANDBOX:-}" != 1 ]; then
    "$REPO/tests/molecule-venv" >/dev/null || { echo "cannot make the Molecule venv"; exit 1; }
fi
ensure_sandbox "$@"

venv=$("$REPO/tests/molecule-venv") || { echo "no Molecule venv: run tests/molecule-venv outside the sandbox"; exit 1; }
export PATH="$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
unset KVMDRIVE_BIN
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
KVMDRIVE_BOX=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
export KVMDRIVE_BOX

work=$(mktemp -d /tmp/kvmdrive-molecule-reuse.XXXXXX)
export KVMDRIVE_HOME=${KVMDRIVE_HOME:-$HOME/.local/share/kvmdrive} HOME="$work/home"
mkdir -p "$HOME"
cp -r "$REPO/tests/fixtures/sample-role" "$work/sample-role"
role="$work/sample-role"
sed -i 's/^  name: molecule-kvmdrive$/  name: molecule-kvmdrive\n  reuse: true/' "$role/molecule/single/molecule.yml"
trap 'cd "$role" && molecule reset -s single >/dev/null 2>&1; rm -rf "$work"' EXIT
cd "$role"
now() { date +%s%N; }
elapsed() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }

for run in 1 2; do
    t0=$(now)
    molecule test -s single > "$work/test$run.log" 2>&1
    rc=$?
    echo "timing: molecule test with reuse, run $run: $(elapsed "$t0")"
    check "molecule test run $run passes (rc $rc)" test "$rc" = 0
    [ "$rc" = 0 ] || tail -n 60 "$work/test$run.log"
done
check "run 1 kept a pristine snapshot and parked the machine" \
    bash -c "grep -q 'saved kvmdrive-pristine' '$work/test1.log' && grep -q 'parked' '$work/test1.log'"
check "run 2 reverted instead of booting" \
    bash -c "grep -q 'reused, no boot' '$work/test2.log' && ! grep -q 'starting (' '$work/test2.log'"
grep -E "reverted to|ready:" "$work/test2.log" | sed 's/^/  /'
check "a domain is left parked between runs" bash -c "test -n \"\$(virsh list --all --name | grep -v '^$')\""

check "molecule reset" molecule reset -s single
check "no domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no network left" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
check "only the box's base volume is left in the pool" \
    bash -c "! virsh vol-list kvmdrive | awk 'NR>2 {print \$1}' | grep -v '^box-' | grep -q ."
check "no parked machine left" test -z "$(kvmdrive gc)"

finish
