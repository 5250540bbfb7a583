#!/usr/bin/env bash
# End to end with the bundled box, inside the sandbox: `kvmdrive test
# --reuse` twice on a one-task scenario (tests/fixtures/quick: the reuse is
# under test, not the role), the second run without a boot (same boot_id);
# the machine parked, listed by status and gc; a changed platform gets a
# fresh machine; destroy --purge leaves no snapshot, domain, network or
# volume. Timings are printed for the report, not asserted.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# ---- reuse: `kvmdrive test --reuse` twice on the quick scenario --------------
venv=${KVMDRIVE_VENV:-/var/tmp/kvmdrive-venv}
[ -x "$venv/bin/ansible-playbook" ] || venv=$("$REPO/tests/molecule-venv")
export PATH="$venv/bin:$PATH" KVMDRIVE_BOX="$box" ANSIBLE_FORCE_COLOR=0 NO_COLOR=1
cp -r "$REPO/tests/fixtures/quick" "$proj/quick"
scen="$proj/quick/molecule/single"
trap 'cd /; "$KVMDRIVE" -C "$scen" destroy --purge >/dev/null 2>&1; rm -rf "$proj"' EXIT

start=$(date +%s%N)
"$KVMDRIVE" -C "$scen" test --reuse > "$proj/reuse1.log" 2>&1; rc=$?
echo "timing: kvmdrive test --reuse, first run (boots) $(ms "$start") ms"
check "first test --reuse passes (rc $rc)" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 40 "$proj/reuse1.log"
check "it kept a pristine snapshot and parked the machine" \
    bash -c "grep -q 'saved kvmdrive-pristine' '$proj/reuse1.log' && grep -q 'parked' '$proj/reuse1.log'"
check "status says parked" bash -c "'$KVMDRIVE' -C '$scen' status | grep -q '^instance  *parked'"
check "gc lists it" bash -c "'$KVMDRIVE' gc | grep -q instance"

check "create --reuse reverts to it" "$KVMDRIVE" -C "$scen" create --reuse
boot1=$("$KVMDRIVE" -C "$scen" ssh instance -- cat /proc/sys/kernel/random/boot_id)
# Parked again, so the next run reads molecule.yml, not the saved platforms.
check "destroy --reuse parks it again" "$KVMDRIVE" -C "$scen" destroy --reuse

start=$(date +%s%N)
"$KVMDRIVE" -C "$scen" test --reuse > "$proj/reuse2.log" 2>&1; rc=$?
echo "timing: kvmdrive test --reuse, second run (reverts) $(ms "$start") ms"
check "second test --reuse passes (rc $rc)" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 40 "$proj/reuse2.log"
check "the second run did not boot" \
    bash -c "grep -q 'reused, no boot' '$proj/reuse2.log' && ! grep -q 'starting (' '$proj/reuse2.log'"
grep -E "reverted to|SSH answered|ready:" "$proj/reuse2.log" | sed 's/^/  /'

check "create --reuse again" "$KVMDRIVE" -C "$scen" create --reuse
check "same boot_id: the machine never rebooted" \
    test "$("$KVMDRIVE" -C "$scen" ssh instance -- cat /proc/sys/kernel/random/boot_id)" = "$boot1"

# A changed platform means a fresh machine.
"$KVMDRIVE" -C "$scen" destroy --reuse >/dev/null 2>&1
sed -i 's/memory: 512/memory: 640/' "$scen/molecule.yml"
"$KVMDRIVE" -C "$scen" create --reuse > "$proj/reuse3.log" 2>&1
check "a changed platform gets a fresh machine" \
    bash -c "grep -q 'making a fresh machine' '$proj/reuse3.log' && grep -q 'starting (' '$proj/reuse3.log'"

check "destroy --purge" "$KVMDRIVE" -C "$scen" destroy --purge
check "no domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no network left" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
check "only the box's base volume is left in the pool" \
    bash -c "! virsh vol-list kvmdrive | awk 'NR>2 {print \$1}' | grep -v '^box-' | grep -q ."
check "no parked machine left" bash -c "test -z \"\$('$KVMDRIVE' gc)\""

finish
