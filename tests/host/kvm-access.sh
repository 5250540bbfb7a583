#!/usr/bin/env bash
# Scenario: no udev, so /dev/kvm is root:root 0600, and Debian's qemu.conf
# drops qemu to libvirt-qemu. `host check` fails with kvm-access (and the
# caps-cache re-probe trap, measured here as the time of `virsh define`),
# `host up --fix` makes /dev/kvm root:kvm 0660 as udev would, define is fast
# again, a VM boots, and a second `host up --fix` changes nothing.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox --kvm-owner root:root --kvm-mode 0600 -- "$@"
sandbox_env

dom=$(mktemp /tmp/kvmdrive-dom.XXXXXX.xml)
cat >"$dom" <<'XML'
<domain type='qemu'><name>kvmdrive-define-timing</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>
XML
define_ms() {   # how long `virsh define` takes (libvirt looks up the qemu capabilities)
    local t0 ms
    t0=$(now_ms)
    virsh -q define "$dom" >/dev/null || return 1
    ms=$(( $(now_ms) - t0 ))
    virsh -q undefine kvmdrive-define-timing >/dev/null
    echo "$ms"
}

t0=$(now_ms)
out=$("$KVMDRIVE" --json host check); rc=$?
echo "host check: $(( $(now_ms) - t0 )) ms"
check "check exits 1" test "$rc" = 1
check "check: kvm-access fails" test "$(finding kvm-access <<<"$out")" = fail
check "check: caps-cache fails" test "$(finding caps-cache <<<"$out")" = fail
check "kvm-access names libvirt-qemu and the fix" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-access"][0]
assert "libvirt-qemu" in f["summary"] and "kvmdrive host up --fix" in f["fix"] and "root:root 0600" in f["saw"], f' "$out"
check "check says use TCG here" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-runs-guests"][0]
assert f["summary"].startswith("use TCG") and "kvm_pvm" in f["summary"], f' "$out"

before=$(define_ms); before2=$(define_ms)
reprobes=$(grep -c 'but it is not available now' /var/log/libvirt/libvirtd.log)
echo "virsh define before the fix: $before ms, $before2 ms; libvirt logged $reprobes re-probe(s)"
check "libvirt re-probes qemu on define before the fix" test "$reprobes" -gt 0

fix=$("$KVMDRIVE" --json host up --fix); rc=$?
check "host up --fix exits 0" test "$rc" = 0
check "host up --fix repaired kvm-access" test "$(json "[f['check'] for f in j['up']['fixed']]" <<<"$fix")" = "['kvm-access', 'ip-forward']"
check "/dev/kvm is root:kvm 0660" test "$(stat -c '%U:%G %a' /dev/kvm)" = "root:kvm 660"

define_ms >/dev/null   # the one re-probe that refills the cache
after=$(define_ms); after2=$(define_ms)
reprobes2=$(grep -c 'but it is not available now' /var/log/libvirt/libvirtd.log)
echo "virsh define after the fix: $after ms, $after2 ms; re-probes since: $((reprobes2 - reprobes))"
check "define is fast after the fix (< 1 s)" test "$after2" -lt 1000
check "no more re-probes" test "$reprobes2" = "$reprobes"

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 0 after the fix" test "$rc" = 0
check "check: kvm-access ok" test "$(finding kvm-access <<<"$out")" = ok

sums=$(md5sum /etc/libvirt/qemu.conf; stat -c '%U:%G %a %Z' /dev/kvm; readlink /etc/alternatives/iptables)
again=$("$KVMDRIVE" --json host up --fix)
check "a second host up --fix changes nothing" test "$(json "j['up']['changed']" <<<"$again")" = False
check "  (qemu.conf, /dev/kvm, alternatives identical)" test "$sums" = "$(md5sum /etc/libvirt/qemu.conf; stat -c '%U:%G %a %Z' /dev/kvm; readlink /etc/alternatives/iptables)"

check "a VM boots" boot_vm kvmaccess
rm -f "$dom"
finish
