#!/usr/bin/env bash
# End to end with the bundled box, inside the sandbox: snapshot save, a file
# written in the guest, snapshot restore (the file is gone, SSH answers at
# once, the clock is right: set by the guest agent; an SSH master opened
# before the save does not hang the next session); suspend/resume without a
# reboot (same boot_id, the clock right again: set in the login);
# a halted machine restored to the running snapshot (libvirt's revert);
# snapshot delete and destroy leave no snapshot or domain (reuse: tests/e2e/long/reuse.sh). Timings are
# printed for the report, not asserted.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
trap 'cd /; "$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
cd "$proj"
cat > kvmdrive.yml <<YML
defaults:
  box: $box
  memory: 512
machines:
  - name: web
    guest_agent: true   # the bundled box has qemu-guest-agent
YML

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
boot_id() { "$KVMDRIVE" ssh web -- cat /proc/sys/kernel/random/boot_id 2>/dev/null; }

check "up" "$KVMDRIVE" up
boot1=$(boot_id)

# An SSH master kept open across the save (as Ansible's ControlPersist
# keeps one): after the restore its connection is out of step with the
# guest, and a session through it would hang unless restore closes it.
"$KVMDRIVE" ssh-config > ssh.cfg
master=(ssh -F ssh.cfg -o ControlMaster=auto -o ControlPersist=300 -o "ControlPath=$proj/cm-%C")
check "an SSH master to the guest" "${master[@]}" web true

start=$(date +%s%N)
check "snapshot save clean" "$KVMDRIVE" snapshot save clean
echo "timing: snapshot save (512 MiB, running) $(ms "$start") ms"
check "snapshot list shows it" bash -c "'$KVMDRIVE' snapshot list | grep -q '^web  *clean  *running'"
check "snapshot list --json" bash -c "'$KVMDRIVE' --json snapshot list | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r[0][\"machine\"]==\"web\" and r[0][\"name\"]==\"clean\", r'"

check "write a file in the guest (through the master)" "${master[@]}" web touch /home/vagrant/after-snapshot
sleep 5   # let the guest clock run past the snapshot's

qemu_pid() { cat "/run/libvirt/qemu/$(virsh list --name | grep -v '^$' | head -1).pid" 2>/dev/null; }
pid1=$(qemu_pid)
start=$(date +%s%N)
check "snapshot restore clean" bash -c "'$KVMDRIVE' -vv snapshot restore clean > restore.log 2>&1"
echo "timing: snapshot restore -> SSH answered $(ms "$start") ms (whole command)"
check "the guest agent set the clock" grep -q "clock set by the guest agent" restore.log
check "the running machine was reverted in place (loadvm)" grep -q "reverted to clean (in place)" restore.log
check "... in the same QEMU process (pid $pid1)" test -n "$pid1" -a "$(qemu_pid)" = "$pid1"
check "restore closed the master's connection" grep -qE "closed [1-9][0-9]* host connection" restore.log
check "ssh with the same ControlPath answers (no hang on the old master)" timeout 30 "${master[@]}" web true
start=$(date +%s%N)
check "the file is gone" "$KVMDRIVE" ssh web -- test ! -e /home/vagrant/after-snapshot
echo "timing: first ssh after restore $(ms "$start") ms"
check "no reboot: same boot_id after restore" test "$(boot_id)" = "$boot1"
before=$(date +%s); guest=$("$KVMDRIVE" ssh web -- date +%s); after=$(date +%s)
check "the guest clock was corrected (host $before..$after, guest $guest)" \
    test "$guest" -ge $((before - 1)) -a "$guest" -le $((after + 1))

start=$(date +%s%N)
check "suspend" "$KVMDRIVE" suspend
echo "timing: suspend $(ms "$start") ms"
check "status says saved" bash -c "'$KVMDRIVE' status | grep -q '^web  *saved'"
sleep 3   # the saved guest's clock falls behind
start=$(date +%s%N)
check "resume" "$KVMDRIVE" resume
echo "timing: resume -> SSH $(ms "$start") ms"
check "no reboot: same boot_id after resume" test "$(boot_id)" = "$boot1"
before=$(date +%s); guest=$("$KVMDRIVE" ssh web -- date +%s); after=$(date +%s)
check "the guest clock was corrected after resume (host $before..$after, guest $guest)" \
    test "$guest" -ge $((before - 1)) -a "$guest" -le $((after + 1))

# A halted machine goes back to the running snapshot by libvirt's revert
# (a new QEMU process loads it).
check "halt" "$KVMDRIVE" halt
start=$(date +%s%N)
check "snapshot restore clean of the halted machine" bash -c "'$KVMDRIVE' -vv snapshot restore clean > restore2.log 2>&1"
echo "timing: snapshot restore of a halted machine -> SSH answered $(ms "$start") ms"
check "... by libvirt, since no QEMU ran" grep -q "reverted to clean by libvirt" restore2.log
check "... running again without a boot (same boot_id)" test "$(boot_id)" = "$boot1"

# Vagrant's push / pop: a stack of unnamed snapshots.
check "snapshot push" "$KVMDRIVE" snapshot push
check "write a file after the push" "$KVMDRIVE" ssh web -- touch /home/vagrant/after-push
check "snapshot save --force replaces clean" "$KVMDRIVE" snapshot save --force clean
check "snapshot pop" "$KVMDRIVE" snapshot pop
check "... the file written after the push is gone" "$KVMDRIVE" ssh web -- test ! -e /home/vagrant/after-push
check "... no reboot (same boot_id)" test "$(boot_id)" = "$boot1"
check "... and the pushed snapshot was deleted (clean is left)" \
    bash -c "test \"\$('$KVMDRIVE' snapshot list | awk '{print \$2}' | tr '\n' ' ')\" = 'clean '"
check "a second pop has nothing to pop" bash -c "! '$KVMDRIVE' snapshot pop 2>/dev/null"
check "snapshot delete clean" "$KVMDRIVE" snapshot delete clean
check "no snapshot left" bash -c "test -z \"\$('$KVMDRIVE' snapshot list)\""
check "destroy" "$KVMDRIVE" destroy
check "no domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""

finish
