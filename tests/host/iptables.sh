#!/usr/bin/env bash
# Scenario: the runner keeps its rules in legacy iptables (here: what Docker
# makes — FORWARD policy DROP, DOCKER chains, a MASQUERADE rule) while
# Debian points `iptables` at nft. libvirt then puts its NAT rules into nft,
# the legacy DROP still applies, and the guest network looks fine but
# forwards nothing. `host check` reports the mismatch, `host up --fix`
# switches the alternative to legacy and restarts libvirtd (which re-creates
# its rules there), and the guest reaches its NAT gateway and, through it,
# an upstream host, masqueraded. A second `host up --fix` changes nothing.
#
# The "guest" is a network namespace on a veth whose other end is a port of
# the libvirt bridge: to netfilter its packets are exactly a VM's (they
# arrive on the bridge and are routed by the host), and it needs no boot.
# The upstream host is another namespace behind a veth. All of it exists
# only inside the sandbox's network namespace.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox -- "$@"
sandbox_env

NET=kvmdrive-nat-test BR=kvd-nat0 GW=192.168.150.1 GUEST=192.168.150.10 UP_HOST=198.18.0.2 UP_GW=198.18.0.1
cleanup() {
    [[ -n ${srv:-} ]] && kill "$srv" 2>/dev/null
    ip netns del guest 2>/dev/null; ip netns del wan 2>/dev/null
    virsh -q net-destroy $NET >/dev/null 2>&1; virsh -q net-undefine $NET >/dev/null 2>&1
}
trap cleanup EXIT

# 1. The runner's rules, in legacy iptables.
iptables-legacy -P FORWARD DROP
iptables-legacy -N DOCKER
iptables-legacy -N DOCKER-USER
iptables-legacy -A FORWARD -j DOCKER-USER
iptables-legacy -A FORWARD -o docker0 -j DOCKER
iptables-legacy -A DOCKER-USER -j RETURN
iptables-legacy -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
check "iptables points at nft" bash -c 'iptables --version | grep -q nf_tables'

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 1" test "$rc" = 1
check "check: iptables-backend fails" test "$(finding iptables-backend <<<"$out")" = fail
check "the finding names both backends and the fix" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="iptables-backend"][0]
assert "legacy" in f["summary"] and "nft" in f["summary"], f
assert "update-alternatives --set iptables /usr/sbin/iptables-legacy" in f["fix"], f
assert "DOCKER" in f["saw"] and "filter/FORWARD=DROP" in f["saw"], f' "$out"

# 2. A libvirt NAT network, a guest on its bridge, an upstream host.
cat >/tmp/$NET.xml <<XML
<network><name>$NET</name><forward mode='nat'/><bridge name='$BR' stp='off' delay='0'/>
<ip address='$GW' prefix='24'><dhcp><range start='192.168.150.100' end='192.168.150.200'/></dhcp></ip></network>
XML
virsh -q net-define /tmp/$NET.xml >/dev/null && virsh -q net-start $NET >/dev/null
check "NAT network started" test -d /sys/class/net/$BR

ip netns add guest
ip link add g-host type veth peer name g-guest
ip link set g-guest netns guest
ip link set g-host master $BR up
ip -n guest addr add $GUEST/24 dev g-guest
ip -n guest link set g-guest up
ip -n guest link set lo up
ip -n guest route add default via $GW

ip netns add wan
ip link add w-host type veth peer name w-wan
ip link set w-wan netns wan
ip addr add $UP_GW/24 dev w-host
ip link set w-host up
ip -n wan addr add $UP_HOST/24 dev w-wan
ip -n wan link set w-wan up
ip -n wan link set lo up
# Upstream: tells each client the address it sees the client at.
ip netns exec wan python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("'$UP_HOST'", 8080)); s.listen(8)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()' &
srv=$!
# Wait until upstream answers (from the sandbox itself: no forwarding involved).
for _ in $(seq 50); do timeout 1 bash -c "exec 3<>/dev/tcp/$UP_HOST/8080" 2>/dev/null && break; sleep 0.1; done
check "upstream answers the sandbox directly" timeout 1 bash -c "exec 3<>/dev/tcp/$UP_HOST/8080"

gateway() {   # the guest opens a TCP connection to dnsmasq on its gateway
    ip netns exec guest timeout 5 bash -c "exec 3<>/dev/tcp/$GW/53" 2>/dev/null
}
upstream() {  # the guest talks to the upstream host through the NAT; prints what upstream saw
    ip netns exec guest timeout 4 python3 -c '
import socket; s = socket.create_connection(("'$UP_HOST'", 8080), timeout=3); print(s.recv(64).decode())' 2>/dev/null
}

check "before the fix: the guest reaches its gateway" gateway
check "before the fix: traffic through the NAT is dropped (the bug)" not upstream

# 3. The fix.
fix=$("$KVMDRIVE" --json host up --fix); rc=$?
check "host up --fix exits 0" test "$rc" = 0
check "host up --fix switched iptables to legacy" python3 -c '
import json,sys; j=json.loads(sys.argv[1])["up"]
assert {"check": "iptables-backend", "fix": "iptables-alternative", "backend": "legacy"}.items() <= [f for f in j["fixed"] if f["check"]=="iptables-backend"][0].items(), j
assert j["restarted"] == ["libvirtd"], j' "$fix"
check "iptables now is legacy" bash -c 'iptables --version | grep -q legacy'
check "libvirt's rules are in legacy now" bash -c 'iptables-legacy-save | grep -q LIBVIRT_FWO'

out=$("$KVMDRIVE" --json host check); rc=$?
check "check exits 0 after the fix" test "$rc" = 0
check "check: iptables-backend ok" test "$(finding iptables-backend <<<"$out")" = ok

check "after the fix: the guest reaches its gateway" gateway
seen=$(upstream)
check "after the fix: the guest reaches upstream through its NAT gateway, masqueraded (seen as '$seen')" test "$seen" = "$UP_GW"

sums=$(md5sum /etc/libvirt/qemu.conf /var/lib/dpkg/alternatives/iptables; readlink /etc/alternatives/iptables; cat /run/libvirtd.pid)
again=$("$KVMDRIVE" --json host up --fix)
check "a second host up --fix changes nothing" test "$(json "j['up']['changed']" <<<"$again")" = False
check "  (alternatives, qemu.conf identical, libvirtd not restarted)" test "$sums" = "$(md5sum /etc/libvirt/qemu.conf /var/lib/dpkg/alternatives/iptables; readlink /etc/alternatives/iptables; cat /run/libvirtd.pid)"
finish
