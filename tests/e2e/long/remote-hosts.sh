#!/usr/bin/env bash
# End to end over two hypervisor hosts (tests/sandbox/hosts: each in its own
# namespaces with its own libvirtd and sshd, reached from this sandbox over a
# veth, SSH only): four machines with `hosts:` and no pins are spread two
# and two by free memory (both hosts' libvirt read the same kernel, so their
# free memory is equal within noise, and placement counts what it already
# placed), `ssh` to each, plain `ssh -F` with `ssh-config`, `converge` with
# the inventory, `snapshot save` and `snapshot list --json` showing the
# machines of both hosts, `snapshot restore` in place on both (QEMU's
# loadvm through the monitor passthrough over qemu+ssh), `provision` on
# both. Then host 2 is stopped:
# `destroy` removes host 1's machines and names those it could not remove,
# `up` fails naming host 2 before anything is made on host 1; with the host
# back, `destroy` finishes and leaves nothing on either host. In
# tests/e2e/long (scripts/test --long): TCG guests on two loaded cores take
# minutes; even two machines (one a host: REMOTE_HOSTS_MACHINES=2) took
# 5-14 min here, over CI's 3-min budget.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
ensure_sandbox "$@"

N=${REMOTE_HOSTS_MACHINES:-4}
box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
mapfile -t uris < <("$REPO/tests/sandbox/hosts" up 2) || true
[ "${#uris[@]}" = 2 ] || { echo "cannot start two hosts"; exit 1; }
echo "hosts: ${uris[*]}"
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
kd() { "$KVMDRIVE" "$@"; }
trap 'cd /; "$REPO/tests/sandbox/hosts" up 2 >/dev/null 2>&1; kd -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"; "$REPO/tests/sandbox/hosts" down' EXIT
cd "$proj"
{
    echo "hosts:"
    for u in "${uris[@]}"; do echo "  - $u"; done
    echo "defaults:"
    echo "  box: $box"
    echo "  memory: 512"
    echo "  cpus: 1"
    echo "  accel: tcg"
    echo "  boot_timeout: 900"
    echo "  provision:"
    echo "    - {type: shell, inline: \"echo run >> /tmp/provisioned\", name: count}"
    echo "machines:"
    for ((i = 1; i <= N; i++)); do echo "  - name: m$i"; done
} > kvmdrive.yml
rv() { virsh -q -c "$1" "${@:2}"; }
on_host() { rv "$1" list --all --name | grep -c . ; }
# none URI ARGS...: virsh answers, and lists nothing (a host that does not
# answer fails the check instead of passing it).
none() { local o; o=$(rv "$@") || return 1; test -z "$o"; }
# no_net URI: no kvmdrive network on the host (which answers).
no_net() { local o; o=$(rv "$1" net-list --all --name) || return 1; ! grep -q kvmdrive- <<<"$o"; }
# no_overlay URI: only box base volumes in the host's pool.
no_overlay() { local o; o=$(rv "$1" vol-list kvmdrive) || return 1; ! awk '{print $1}' <<<"$o" | grep -v '^box-' | grep -q .; }

t0=$SECONDS
out=$(kd up 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "up over two hosts (rc $rc, $((SECONDS - t0)) s)" test "$rc" = 0
half=$((N / 2))
check "host 1 runs $half machines ($(on_host "${uris[0]}"))" test "$(on_host "${uris[0]}")" = "$half"
check "host 2 runs $half machines ($(on_host "${uris[1]}"))" test "$(on_host "${uris[1]}")" = "$half"
check "each host got the project's network" bash -c \
    "virsh -q -c '${uris[0]}' net-list --name | grep -q kvmdrive- && virsh -q -c '${uris[1]}' net-list --name | grep -q kvmdrive-"
check "nothing was made in the client's own libvirt" bash -c "test -z \"\$(virsh -q list --all --name 2>/dev/null)\""

st=$(kd status)
echo "$st" | sed 's/^/  | /'
check "status names each machine's host" test "$(grep -c 'running .* on qemu+ssh://' <<<"$st")" = "$N"
check "status says machines on different hosts need routing" grep -q "reach each other only where you route" <<<"$st"
js=$(kd --json status)
check "status --json has the host of every machine" python3 -c \
    'import json,sys; l=json.loads(sys.argv[1]); assert len(l)==int(sys.argv[2]) and all(m["host"].startswith("qemu+ssh://") for m in l)' "$js" "$N"
check "machine records carry their host" grep -q '"host": "qemu+ssh://' .kvmdrive/machines/m1/machine.json

for ((i = 1; i <= N; i++)); do
    o=$(kd ssh "m$i" -- uname -n 2>&1)
    check "kvmdrive ssh m$i ($o)" test "$o" = "m$i"
done
kd ssh-config > ssh_config
o=$(for ((i = 1; i <= N; i++)); do ssh -F ssh_config "m$i" hostname; done 2>&1 | tr '\n' ' ')
check "plain ssh -F with ssh-config reaches every machine ($o)" test "$(echo $o)" = "$(seq -f 'm%g' 1 "$N" | tr '\n' ' ' | sed 's/ $//')"

cat > site.yml <<'YML'
- hosts: all
  gather_facts: false
  tasks:
    - name: a file on every machine
      ansible.builtin.command: touch /tmp/converged
      args:
        creates: /tmp/converged
YML
venv=${KVMDRIVE_VENV:-/var/tmp/kvmdrive-venv}
out=$(PATH="$venv/bin:$PATH" kd converge site.yml 2>&1); rc=$?
echo "$out" | tail -n 8 | sed 's/^/  | /'
check "converge with the inventory over both hosts (rc $rc)" test "$rc" = 0
converged() { local i; for ((i = 1; i <= N; i++)); do kd ssh "m$i" -- test -f /tmp/converged || return 1; done; }
check "converge reached every machine" converged

# ---- snapshot and provision reach every host ----
out=$(kd snapshot save s1 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "snapshot save over both hosts (rc $rc)" test "$rc" = 0
sj=$(kd --json snapshot list)
check "snapshot list --json has s1 of every machine, with both hosts" python3 -c '
import json, sys
rows, n, uris = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
assert {r["machine"] for r in rows if r["name"] == "s1"} == {"m%d" % i for i in range(1, n + 1)}, rows
assert {r["host"] for r in rows} == set(uris), rows' "$sj" "$N" "${uris[@]}"
out=$(kd -vv snapshot restore s1 2>&1); rc=$?
echo "$out" | grep -E "reverted|restored" | sed 's/^/  | /'
check "snapshot restore over both hosts (rc $rc)" test "$rc" = 0
check "every machine reverted in place (QEMU's loadvm through qemu+ssh's monitor passthrough)" \
    test "$(grep -c 'reverted to s1 (in place)' <<<"$out")" = "$N"
pj=$(kd --json provision 2>/dev/null); rc=$?
check "provision over both hosts (rc $rc)" test "$rc" = 0
check "provision --json has a run of every machine" python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.argv[1].splitlines() if l.strip()]
assert sorted(r["machine"] for r in runs if r["exit_status"] == 0) == ["m%d" % i for i in range(1, int(sys.argv[2]) + 1)], runs' "$pj" "$N"
provisioned_twice() { local i; for ((i = 1; i <= N; i++)); do test "$(kd ssh "m$i" -- cat /tmp/provisioned | grep -c run)" = 2 || return 1; done; }
check "every machine ran its provisioner at up and again at provision" provisioned_twice

# ---- a host stopped mid-way ----
on2=$(python3 -c 'import json,sys; print(", ".join(m["name"] for m in json.load(sys.stdin) if m["host"]==sys.argv[1]))' "${uris[1]}" <<<"$js")
"$REPO/tests/sandbox/hosts" stop 2
out=$(kd destroy 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "destroy with host 2 stopped fails (rc $rc)" test "$rc" != 0
check "destroy names what it could not remove ($on2 on host 2)" grep -qF "could not remove $on2 on ${uris[1]}" <<<"$out"
check "host 1's machines are gone" none "${uris[0]}" list --all --name
check "no kvmdrive network left on host 1" no_net "${uris[0]}"
check "the state of host 2's machines stays for a later destroy" test -e ".kvmdrive/machines/${on2%%,*}/machine.json"

out=$(kd up 2>&1); rc=$?
echo "$out" | sed 's/^/  | /'
check "up with host 2 stopped fails (rc $rc)" test "$rc" != 0
check "the error names host 2 and libvirt's error" grep -q "host ${uris[1]} does not answer: ." <<<"$out"
check "nothing was created on host 1" none "${uris[0]}" list --all --name
check "no network was created on host 1" no_net "${uris[0]}"

check "host 2 starts again" "$REPO/tests/sandbox/hosts" up 2
check "destroy with host 2 back finishes the job" kd destroy
for u in "${uris[@]}"; do
    check "no domain left on $u" none "$u" list --all --name
    check "no overlay left on $u (only box base volumes)" no_overlay "$u"
    check "no kvmdrive network left on $u" no_net "$u"
done
check "the project's state is gone" test ! -e .kvmdrive
echo "wall: $((SECONDS - t0)) s"
finish
