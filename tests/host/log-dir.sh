#!/usr/bin/env bash
# Scenario: /var/log/libvirt/qemu is missing (a fresh /var/log in a
# container). Every domain start fails on its log file; `host check` names
# it, `up` says to run `kvmdrive host up --fix`, which creates it (root:root
# 0755, as Debian's libvirt-daemon-system has it), and a domain starts.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox -- "$@"
sandbox_env

# The sandbox's /var/log/libvirt is its own: never remove the host's.
findmnt -n /var/log/libvirt >/dev/null || { echo "FAIL: /var/log/libvirt is not the sandbox's"; exit 1; }
rm -rf /var/log/libvirt/qemu

dom=$(mktemp /tmp/kvmdrive-dom.XXXXXX.xml)
cat >"$dom" <<'XML'
<domain type='qemu'><name>kvmdrive-log-dir</name><memory unit='MiB'>16</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
<serial type='pty'><log file='/var/log/libvirt/qemu/kvmdrive-log-dir-console.log' append='off'/><target port='0'/></serial></devices></domain>
XML
# A serial console logged to a file, as kvmdrive's domains have: libvirt
# makes the directory for qemu's own log itself, not for this one.
virsh -q define "$dom" >/dev/null
err=$(virsh -q start kvmdrive-log-dir 2>&1); rc=$?
echo "  virsh start without the directory: ${err//$'\n'/ }"
check "a domain does not start without it" test "$rc" != 0
check "libvirt's error names the log file" grep -q "/var/log/libvirt/qemu/" <<<"$err"

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 1" test "$rc" = 1
check "check: qemu-log-dir fails with the fix" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="qemu-log-dir"][0]
assert f["status"]=="fail" and "/var/log/libvirt/qemu" in f["summary"] and "kvmdrive host up --fix" in f["fix"], f' "$out"

box=$(test_box) || exit 1
proj=$(mktemp -d /tmp/kvmdrive-host-logdir.XXXXXX)
trap '"$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
printf 'defaults:\n  box: %s\n  memory: 512\n  accel: tcg\n' "$box" >"$proj/kvmdrive.yml"
up=$("$KVMDRIVE" -C "$proj" up 2>&1); rc=$?
grep -i "hint" <<<"$up" | sed 's/^/  | /'
check "up fails" test "$rc" != 0
check "up's hint: run kvmdrive host up --fix (check qemu-log-dir)" grep -q "hint:.*qemu-log-dir.*kvmdrive host up --fix" <<<"$up"

fix=$("$KVMDRIVE" --json host up --fix); rc=$?
check "host up --fix exits 0" test "$rc" = 0
check "host up --fix made the directory" grep -q "qemu-log-dir" <<<"$(json "[f['check'] for f in j['up']['fixed']]" <<<"$fix")"
check "it is root:root 0755" test "$(stat -c '%U:%G %a' /var/log/libvirt/qemu)" = "root:root 755"
check "a domain starts" virsh -q start kvmdrive-log-dir
virsh -q destroy kvmdrive-log-dir >/dev/null 2>&1; virsh -q undefine kvmdrive-log-dir >/dev/null 2>&1
out=$("$KVMDRIVE" --json host check)
check "check: qemu-log-dir ok" test "$(finding qemu-log-dir <<<"$out")" = ok
again=$("$KVMDRIVE" --json host up --fix)
check "a second --fix does not touch it" not grep -q "qemu-log-dir" <<<"$(json "[f['check'] for f in j['up']['fixed']]" <<<"$again")"
finish
