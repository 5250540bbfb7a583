#!/usr/bin/env bash
# Scenario: daemons of another mount namespace are not ours. The sandbox
# runs dbus, virtlogd and libvirtd; a `host check` in a nested mount
# namespace with an empty /run (as outside a sandbox or container: the
# processes are visible by pid, their sockets are not) must say "not
# running", not "runs but does not answer (pid N)".
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox -- "$@"
sandbox_env

summary() { json "next(f['summary']+' | '+f['saw'] for f in j['findings'] if f['check']=='$1')"; }

out=$("$KVMDRIVE" --json host check)
for d in dbus virtlogd libvirtd; do
    check "in the sandbox: $d runs and answers" grep -q "running and answering" <<<"$(summary $d <<<"$out")"
done

out=$(unshare --mount --propagation private -- bash -c 'mount -t tmpfs tmpfs /run && exec "$0" --json host check' "$KVMDRIVE"); rc=$?
check "beside it (own /run): check exits 1" test "$rc" = 1
for d in dbus virtlogd libvirtd; do
    s=$(summary $d <<<"$out")
    echo "  $d: $s"
    check "beside it: $d is simply not running" grep -q "^$d is not running" <<<"$s"
done
check "no 'runs but does not answer'" not grep -q "runs but does not answer" <<<"$out"
finish
