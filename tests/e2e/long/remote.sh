#!/usr/bin/env bash
# End to end against a remote libvirt host over qemu+ssh (tests/sandbox/hosts:
# a hypervisor host in its own namespaces, reached from this sandbox over a
# veth): up uploads the box through libvirt, the guest is reached through the
# host (kvmdrive ssh, plain ssh -F with ssh-config, the inventory), and
# destroy leaves nothing on the host. The client's own libvirt stays empty.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
uri=$("$REPO/tests/sandbox/hosts" up 1) || { echo "cannot start the remote host"; exit 1; }
echo "remote host: $uri"
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
kd() { "$KVMDRIVE" -c "$uri" "$@"; }
trap 'cd /; kd -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"; "$REPO/tests/sandbox/hosts" down' EXIT
cd "$proj"
cat > kvmdrive.yml <<YML
defaults:
  box: $box
  memory: 384
  accel: tcg
  boot_timeout: 600
machines:
  - name: web
YML
rv() { virsh -q -c "$uri" "$@"; }

out=$(kd up 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "up on the remote host" test "$rc" = 0
check "up uploaded the box through libvirt" grep -q "uploading box" <<<"$out"
check "the base volume is on the remote host" bash -c "virsh -q -c '$uri' vol-list kvmdrive | grep -q ."
check "the domain runs on the remote host" bash -c "virsh -q -c '$uri' list --name | grep -q web"
check "nothing was made in the client's own libvirt" bash -c "test -z \"\$(virsh -q list --all --name)\" && ! virsh -q pool-list --all --name | grep -q kvmdrive"

out=$(kd ssh web -- uname -n 2>&1)
check "kvmdrive ssh runs a command in the guest ($out)" test "$out" = web

kd ssh-config > ssh_config
check "ssh-config has the jump through the host" grep -q "ProxyCommand ssh .* -W %h:%p root@10.250.1.2" ssh_config
out=$(ssh -F ssh_config web hostname 2>&1)
check "plain ssh -F with ssh-config output reaches web ($out)" test "$out" = web

inv=$(kd inventory 2>/dev/null)
check "the inventory carries the jump" grep -q "ProxyCommand=ssh" <<<"$inv"

out=$(kd up 2>&1)
check "a second up uploads nothing" bash -c '! grep -q "uploading box" <<<"$0"' "$out"

check "destroy removes the machine" kd destroy
check "no domain left on the host" bash -c "test -z \"\$(virsh -q -c '$uri' list --all --name)\""
check "no overlay left on the host (only the box's base volume)" bash -c \
    "test \"\$(virsh -q -c '$uri' vol-list kvmdrive | awk '{print \$1}' | grep -vc '^box-')\" = 0"
check "no kvmdrive network left on the host" bash -c "! virsh -q -c '$uri' net-list --all --name | grep -q kvmdrive-"
check "the project's state is gone" test ! -e .kvmdrive
finish
