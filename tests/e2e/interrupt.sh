#!/usr/bin/env bash
# End to end, inside the sandbox: Ctrl-C (SIGINT) while `up` waits for the
# guest removes what that run created: no domain, no disk, no network, no
# .kvmdrive/. Then a fresh `up` works and `destroy` cleans up.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
trap 'cd /; "$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
cd "$proj"
printf 'defaults:\n  box: %s\nmachines:\n  - name: a\n' "$box" > kvmdrive.yml

"$KVMDRIVE" up > up.log 2>&1 &
pid=$!
# Interrupt once the domain exists (it is then booting).
for _ in $(seq 300); do
    virsh list --name | grep -q -- '-a$' && break
    sleep 0.1
done
sleep 1
kill -INT "$pid"
wait "$pid"; rc=$?
cat up.log
check "interrupted up exits 130 (got $rc)" test "$rc" = 130
check "no domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no overlay left" bash -c "! virsh vol-list kvmdrive | awk 'NR>2 {print \$1}' | grep -v '^box-' | grep -q ."
check "no network left" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
check "no .kvmdrive left" test ! -e .kvmdrive

check "a fresh up works after the interruption" "$KVMDRIVE" up
check "destroy cleans up" "$KVMDRIVE" destroy
finish
