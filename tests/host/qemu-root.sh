#!/usr/bin/env bash
# Scenario: /dev/kvm root-only and qemu.conf runs qemu as a user outside the
# kvm group, so making /dev/kvm root:kvm 0660 would not help: `host up
# --fix` sets user/group "root" in qemu.conf instead and restarts libvirtd
# (which someone else started: `host down` leaves it running).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox --kvm-owner root:root --kvm-mode 0600 --qemu-user nobody:nogroup -- "$@"
sandbox_env

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 1" test "$rc" = 1
check "check: kvm-access fails for nobody" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-access"][0]
assert f["status"]=="fail" and "nobody" in f["summary"], f' "$out"
old_pid=$(cat /run/libvirtd.pid)

fix=$("$KVMDRIVE" --json host up --fix); rc=$?
check "host up --fix exits 0" test "$rc" = 0
check "the fix runs qemu as root and restarts libvirtd" python3 -c '
import json,sys; j=json.loads(sys.argv[1])["up"]
assert [f["fix"] for f in j["fixed"] if f["check"]=="kvm-access"] == ["qemu-runs-as-root"], j
assert j["restarted"] == ["libvirtd"], j' "$fix"
check "qemu.conf says user = \"root\"" grep -qx 'user = "root"' /etc/libvirt/qemu.conf
check "/dev/kvm left as it was" test "$(stat -c '%U:%G %a' /dev/kvm)" = "root:root 600"
check "libvirtd is a new process" test "$(cat /run/libvirtd.pid)" != "$old_pid"
out=$("$KVMDRIVE" --json host check); rc=$?
check "check: kvm-access ok" test "$(finding kvm-access <<<"$out")" = ok
check "check: caps-cache ok" test "$(finding caps-cache <<<"$out")" = ok

again=$("$KVMDRIVE" --json host up --fix)
check "a second host up --fix changes nothing" test "$(json "j['up']['changed']" <<<"$again")" = False

down=$("$KVMDRIVE" --json host down)
check "host down leaves the restarted libvirtd running" test "$(json "j['left_running']" <<<"$down")" = "['libvirtd']"
check "libvirt still answers" bash -c 'virsh -q version >/dev/null'
finish
