#!/usr/bin/env bash
# Scenario: no daemons running (a CI container without systemd).
# `host check` fails on them, `host up` starts dbus, virtlogd and libvirtd
# (detached, pid and log files), a VM boots, a second `host up` changes
# nothing, `host down` stops exactly those three.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox --no-daemons -- "$@"
sandbox_env

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 1 with no daemons" test "$rc" = 1
check "check: libvirtd fails" test "$(finding libvirtd <<<"$out")" = fail
check "check: virtlogd fails" test "$(finding virtlogd <<<"$out")" = fail

t0=$(now_ms)
up=$("$KVMDRIVE" --json host up); rc=$?
echo "host up: $(( $(now_ms) - t0 )) ms"
check "host up exits 0" test "$rc" = 0
check "host up started dbus, virtlogd, libvirtd" test "$(json "j['up']['started']" <<<"$up")" = "['dbus', 'virtlogd', 'libvirtd']"
for d in dbus virtlogd libvirtd; do
    check "$d has a log file" test -f "$KVMDRIVE_LOG_DIR/$d.log"
done
pids=$(json "' '.join(str(s['pid']) for s in __import__('json').load(open('/run/kvmdrive/host-up.json')))" <<<"{}")
check "state file lists three pids ($pids)" test "$(wc -w <<<"$pids")" = 3
check "libvirt answers" bash -c "virsh -q version >/dev/null"
out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 0 after host up" test "$rc" = 0
check "check: libvirtd ok" test "$(finding libvirtd <<<"$out")" = ok

again=$("$KVMDRIVE" --json host up)
check "a second host up changes nothing" test "$(json "j['up']['changed']" <<<"$again")" = False

check "a VM boots" boot_vm daemons

down=$("$KVMDRIVE" --json host down)
check "host down stopped the three" test "$(json "j['stopped']" <<<"$down")" = "['libvirtd', 'virtlogd', 'dbus']"
alive=0
for p in $pids; do [[ -d /proc/$p ]] && alive=1; done
check "their processes are gone" test "$alive" = 0
check "libvirt no longer answers" bash -c '! virsh -q version 2>/dev/null'
down=$("$KVMDRIVE" --json host down)
check "a second host down stops nothing" test "$(json "j['stopped']" <<<"$down")" = "[]"
finish
