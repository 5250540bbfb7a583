#!/usr/bin/env bash
# End to end for extra networks, inside the sandbox, with two machines booted
# in parallel (twice: up, then up after halt): a static-IP private network and
# a DHCP private network shared by both, an e1000 NIC, a macvtap public
# network, forwarded ports (127.0.0.1 and 0.0.0.0); refusals before anything
# is made; a DHCP client whose first exchanges went unanswered (up applies
# its NIC again); destroy leaves no kvmdrive network. KVMDRIVE_E2E_IPTABLES=legacy
# or nft picks the sandbox's iptables backend first.
#
# The host kernel here has no `dummy` module, so the public network's host
# device is one end of a veth pair (macvtap works on it the same way); the
# other end carries the sandbox host's address on that LAN.
# The e1000 NIC is checked in the domain XML and as an Intel 82540EM PCI
# device in the guest (hardware.sh checks that SSH works over an e1000 NIC).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

# KVMDRIVE_E2E_IPTABLES=legacy|nft: the iptables backend for this run (the
# sandbox's own alternatives), chosen before libvirt makes its first rule.
# Forwarded ports use no firewall rules and must work under either.
backend=${KVMDRIVE_E2E_IPTABLES:-}
if [ -n "$backend" ]; then
    update-alternatives --set iptables "/usr/sbin/iptables-$backend" >/dev/null &&
        update-alternatives --set ip6tables "/usr/sbin/ip6tables-$backend" >/dev/null ||
        { echo "cannot switch iptables to $backend"; exit 1; }
fi
echo "iptables backend: $(iptables --version)"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
proj=$(mktemp -d /tmp/kvmdrive-e2e-net.XXXXXX)
trap 'cd /; "$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
cd "$proj"

ip link add kvdpub0 type veth peer name kvdpub1
ip link set kvdpub0 up
ip link set kvdpub1 up
ip addr add 10.99.0.1/24 dev kvdpub1

nothing_made() {
    test -z "$(virsh list --all --name | grep -v '^$')" &&
        ! virsh net-list --all --name | grep -q kvmdrive- &&
        test ! -d .kvmdrive
}

# ---- refusals, before anything is made ------------------------------------
cat > kvmdrive.yml <<YML
defaults: {box: $box, memory: 512}
machines:
  - name: a
    networks: [{type: public, dev: nosuch0}]
YML
out=$("$KVMDRIVE" up 2>&1)
check "a missing public dev is refused ($(tail -n 2 <<<"$out" | tr '\n' ' '))" grep -q "nosuch0. does not exist" <<<"$out"
check "... and nothing was made" nothing_made

python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",18080)); s.listen(); time.sleep(60)' &
holder=$!
# python starts slowly on a loaded host: `up` must meet a port that is
# already held, or it makes machine `a` (which later steps then find running
# with none of the NICs they declare).
for _ in $(seq 100); do ss -Hltn 'sport = :18080' | grep -q . && break; sleep 0.1; done
check "the port holder listens on 127.0.0.1:18080" bash -c "ss -Hltn 'sport = :18080' | grep -q ."
cat > kvmdrive.yml <<YML
defaults: {box: $box, memory: 512}
machines:
  - name: a
    forwarded_ports: [{guest: 8000, host: 18080}]
YML
out=$("$KVMDRIVE" up 2>&1)
check "a host port in use is refused ($(tail -n 2 <<<"$out" | tr '\n' ' '))" grep -q "cannot listen on 127.0.0.1:18080" <<<"$out"
check "... and nothing was made" nothing_made
kill "$holder"; wait "$holder" 2>/dev/null

sed -i 's/host: 18080}/host: 18080, protocol: udp}/' kvmdrive.yml
out=$("$KVMDRIVE" up 2>&1)
check "udp forwarded ports are refused at load ($(head -n 1 <<<"$out"))" grep -q "udp" <<<"$out"

# ---- two machines, four kinds of NIC ----------------------------------------
cat > kvmdrive.yml <<YML
defaults:
  box: $box
  memory: 512
machines:
  - name: a
    networks:
      - {type: private, ip: 192.168.56.11}
      - {type: private, dhcp: true, name: backend, forward: route}
    forwarded_ports:
      - {guest: 8000, host: 18080}
      - {guest: 8000, host: 18081, host_ip: 0.0.0.0}
  - name: b
    networks:
      - {type: private, ip: 192.168.56.12, netmask: 255.255.255.0}
      - {type: private, dhcp: true, name: backend, forward: route, mac: "52:54:00:6b:0b:02"}
      - {type: public, dev: kvdpub0, mode: bridge, ip: 10.99.0.5/24}
      - {type: private, dhcp: true, name: spare, nic_model: e1000, auto_config: false}
YML

# b's first DHCP exchanges on backend go unanswered (dnsmasq never sees
# them) until up has waited for the address and applied the NIC again: the
# guest's DHCP client, deep in its retry back-off by then, must ask again at
# once and get its reservation within up.
# (raw table: libvirt puts its own ACCEPT for DHCP first in filter INPUT.)
drop_dhcp=(PREROUTING -t raw -p udp --dport 67 -m mac --mac-source 52:54:00:6b:0b:02 -j DROP)
iptables -I "${drop_dhcp[@]}"
start=$(date +%s%N)
"$KVMDRIVE" up > up.log 2>&1 &
up_pid=$!
for _ in $(seq 600); do grep -q "applying .* again" up.log && break; kill -0 $up_pid 2>/dev/null || break; sleep 0.5; done
iptables -D "${drop_dhcp[@]}"
wait $up_pid
up_rc=$?
cat up.log
echo "up took $(( ($(date +%s%N) - start) / 1000000 )) ms"
check "up brings both machines up with their extra NICs" test $up_rc = 0
check "b's backend address did not come at first: up applied that NIC again" \
    grep -qE "b: extra NICs: no 192\.168\.123\.[0-9]+ after 40 s: applying [a-z0-9]+ again" up.log
check "... and the address came then (no warning)" bash -c "! grep -q 'did not come up' up.log"

reach() { # reach MACHINE IP: a TCP connection from MACHINE to IP:22 (the box has no ping)
    "$KVMDRIVE" ssh "$1" -- timeout 3 bash -c "'</dev/tcp/$2/22'"
}
check "a reaches b at 192.168.56.12 (static private network)" reach a 192.168.56.12
check "b reaches a at 192.168.56.11" reach b 192.168.56.11

status=$("$KVMDRIVE" --json status)
backend_a=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[0]["networks"][1]["ip"])' "$status")
backend_b=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])[1]["networks"][1]["ip"])' "$status")
echo "backend addresses: a $backend_a, b $backend_b"
check "status --json reports both DHCP addresses on backend" python3 - "$status" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
a, b = s
assert a["networks"][0] == {"name": "192.168.56.0-24", "mac": a["networks"][0]["mac"], "ip": "192.168.56.11", "prefix": 24}, a
assert a["networks"][1]["name"] == "backend" and a["networks"][1]["ip"], a
assert b["networks"][1]["ip"] and b["networks"][1]["ip"] != a["networks"][1]["ip"], b
assert b["networks"][2]["name"] == "kvdpub0" and b["networks"][2]["ip"] == "10.99.0.5", b
PY
# What a missing DHCP address looks like from both ends: the guest's links,
# networkd's journal, and the address the network's dnsmasq gave out.
dhcp_evidence() { # dhcp_evidence MACHINE
    echo "--- $1: addresses, links and networkd's journal"
    "$KVMDRIVE" ssh "$1" -- 'ip -br addr; networkctl --no-pager list; sudo journalctl -b -u systemd-networkd --no-pager -o short-monotonic | tail -n 60' 2>&1 | sed 's/^/    /'
    echo "--- dnsmasq leases and hosts of the project's networks"
    for f in /var/lib/libvirt/dnsmasq/*.status /var/lib/libvirt/dnsmasq/*.hostsfile; do
        echo "    $f:"; sed 's/^/      /' "$f"
    done
}
for m in b a; do
    want=$([ $m = b ] && echo "$backend_b" || echo "$backend_a")
    check "$m's guest has its DHCP address $want" bash -c "'$KVMDRIVE' ssh $m -- ip -4 -br addr | grep -qF ' $want/'" ||
        dhcp_evidence $m
done
check "a reaches b over backend ($backend_b)" reach a "$backend_b"
backend_net=$(virsh net-list --name | grep -- '-backend$')
check "backend is a routed libvirt network (forward: route)" bash -c \
    "virsh net-dumpxml '$backend_net' | grep -q \"<forward mode='route'/>\""

dom_b=$(virsh list --name | grep -- '-b$')
check "b's spare NIC is an e1000 in the domain XML" bash -c "virsh dumpxml '$dom_b' | grep -q \"<model type='e1000'/>\""
check "b's guest sees an Intel 82540EM (e1000) PCI device" bash -c \
    "'$KVMDRIVE' ssh b -- 'grep -l 0x100e /sys/bus/pci/devices/*/device | while read f; do grep -q 0x8086 \${f%/device}/vendor && echo yes; done' | grep -q yes"
drivers=$("$KVMDRIVE" ssh b -- 'for d in /sys/class/net/*/device/driver; do basename $(readlink $d); done' 2>&1 | sort -u | tr '\n' ' ')
echo "note: NIC drivers in b's guest: $drivers"

check "b has its public address on the macvtap NIC" bash -c "'$KVMDRIVE' ssh b -- ip -4 -br addr | grep -qF ' 10.99.0.5/24'"
reach_public() { # a few tries: the first ARP exchange through macvtap can be slow under load
    for _ in 1 2 3 4 5; do timeout 3 bash -c '</dev/tcp/10.99.0.5/22' 2>/dev/null && return; sleep 1; done
    return 1
}
check "the sandbox host reaches b over the public network (veth LAN)" reach_public

# A web server in a (python starts slowly under TCG: poll through the forward).
serve() {
    "$KVMDRIVE" ssh a -- "setsid -f python3 -m http.server 8000 --directory /etc >/dev/null 2>&1"
    for _ in $(seq 30); do
        curl -sf --max-time 2 http://127.0.0.1:18080/hostname && return
        sleep 0.5
    done
}
out=$(serve)
check "the forwarded port reaches a's web server from the host ($out)" test "$out" = a
out=$(curl -sf --max-time 5 http://10.99.0.1:18081/hostname)
check "a port forwarded on 0.0.0.0 is reached on the host's other address 10.99.0.1 ($out)" test "$out" = a
if [ -n "$backend" ]; then
    check "libvirt's NAT rules went to iptables-$backend" bash -c "iptables-$backend-save | grep -q LIBVIRT_"
fi

out=$("$KVMDRIVE" -v up 2>&1)
count=$(grep -c 'extra NICs (networkd): unchanged' <<<"$out")
check "a second up rewrites no guest network file ($count of 2 machines unchanged)" test "$count" -eq 2

fwd_pid=$(cat .kvmdrive/machines/a/forward.pid)
check "halt stops both" "$KVMDRIVE" halt
check "halt stopped the forwarder (pid $fwd_pid)" bash -c "! kill -0 $fwd_pid 2>/dev/null"
check "up starts them again" "$KVMDRIVE" up
check "a still reaches b at 192.168.56.12 after halt/up" reach a 192.168.56.12
check "b keeps 192.168.56.12 after halt/up" bash -c "'$KVMDRIVE' ssh b -- ip -4 -br addr | grep -qF ' 192.168.56.12/24'"
check "b keeps its DHCP address after halt/up" bash -c "'$KVMDRIVE' ssh b -- ip -4 -br addr | grep -qF ' $backend_b/'"
out=$(serve)
check "the forwarded port works again after halt/up ($out)" test "$out" = a

fwd_pid=$(cat .kvmdrive/machines/a/forward.pid)
check "destroy removes both" "$KVMDRIVE" destroy
check "destroy stopped the forwarder" bash -c "! kill -0 $fwd_pid 2>/dev/null"
check "no kvmdrive domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no kvmdrive network left ($(virsh net-list --all --name | tr '\n' ' '))" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
finish
