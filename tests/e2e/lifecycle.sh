#!/usr/bin/env bash
# End to end with the bundled box, inside the sandbox: two machines up in
# parallel, ssh to both (one shared connection each, ended by destroy), plain `ssh -F` with ssh-config output, halt, up
# again (sshd starts even with the empty host key a crash leaves), an ACPI
# shutdown, destroy, and nothing of kvmdrive left in libvirt or the project.
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
  - name: db
YML

mux=${TMPDIR:-/tmp}/kvmdrive-$(id -u)   # kvmdrive ssh's shared connections
touch since-start
start=$(date +%s%N)
check "up brings two machines up in parallel" "$KVMDRIVE" up
echo "up took $(( ($(date +%s%N) - start) / 1000000 )) ms"

for m in web db; do
    out=$("$KVMDRIVE" ssh "$m" -- uname -a 2>&1)
    check "ssh $m -- uname -a runs in the guest ($out)" grep -q "^Linux $m " <<<"$out"
done
# What roles take for granted on a Debian machine and cannot install offline.
check "the box has ping, crontab, less, vi, nft, service names and time zones" \
    "$KVMDRIVE" ssh web -- 'command -v ping crontab less vi /usr/sbin/nft >/dev/null &&
        test -e /usr/share/zoneinfo/Europe/Paris &&
        python3 -c "import socket; assert socket.getservbyname(\"ssh\") == 22"'

# One shared connection per machine (ControlMaster, 60 s): the next
# `kvmdrive ssh` skips the key exchange and the login.
ours() { find "$mux" -maxdepth 1 -type s -newer since-start 2>/dev/null | wc -l; }
check "kvmdrive ssh keeps a shared connection per machine ($(ours))" test "$(ours)" = 2
for i in 1 2 3; do
    start=$(date +%s%N)
    "$KVMDRIVE" ssh web -- true
    echo "timing: kvmdrive ssh web -- true (shared connection) $(( ($(date +%s%N) - start) / 1000000 )) ms"
done

"$KVMDRIVE" ssh-config > ssh_config
out=$(ssh -F ssh_config web hostname 2>&1)
check "plain ssh -F with ssh-config output reaches web ($out)" test "$out" = web

status=$("$KVMDRIVE" --json status)
check "status --json lists both running with address and key" python3 - "$status" <<'PY'
import json, os, sys
s = json.loads(sys.argv[1])
assert [m["name"] for m in s] == ["web", "db"], s
for m in s:
    assert m["state"] == "running", m
    assert m["address"] and m["port"] == 22 and m["user"] == "vagrant", m
    assert os.stat(m["identity_file"]).st_mode & 0o777 == 0o600, m
PY

addr=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0]["address"])' "$status")
check "the insecure key no longer logs in" bash -c \
    "! ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes \
       -i '$REPO/boxes/keys/vagrant.key.ed25519' vagrant@$addr true 2>/dev/null"

# What a hard power-off soon after the first boot leaves (the key file
# made, its contents never written back): the box must make a new key.
check "db's host key emptied (as a crash would)" \
    "$KVMDRIVE" ssh db -- sudo truncate -s 0 /etc/ssh/ssh_host_ed25519_key
check "halt stops both" "$KVMDRIVE" halt
check "status says shutoff" bash -c "'$KVMDRIVE' status | grep -c shutoff | grep -qx 2"

check "up starts them again" "$KVMDRIVE" up
out=$("$KVMDRIVE" ssh db -- cat /etc/hostname 2>&1)
check "db answers with its own key after the restart ($out)" test "$out" = db
check "db made a new host key at the restart" "$KVMDRIVE" ssh db -- sudo test -s /etc/ssh/ssh_host_ed25519_key
# libvirt's graceful stop (and vagrant-libvirt's halt without SSH) presses
# the ACPI power button: the box must power off.
web_domain=$(virsh list --name | grep -- '-web$')
check "virsh shutdown (ACPI power button) stops web ($web_domain)" bash -c \
    "virsh shutdown '$web_domain' >/dev/null && for _ in \$(seq 120); do
         [ \"\$(virsh domstate '$web_domain')\" = 'shut off' ] && exit 0; sleep 0.5; done; exit 1"

check "destroy removes both" "$KVMDRIVE" destroy
check "destroy ended the shared connections" test "$(ours)" = 0
check "no kvmdrive domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no kvmdrive network left" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
check "only the box's base volume is left in the pool" \
    bash -c "! virsh vol-list kvmdrive | awk 'NR>2 {print \$1}' | grep -v '^box-' | grep -q ."
check ".kvmdrive is gone" test ! -e .kvmdrive
check "destroy with nothing to remove succeeds" "$KVMDRIVE" destroy

finish
