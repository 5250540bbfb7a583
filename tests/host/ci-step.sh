#!/usr/bin/env bash
# Scenario: the CI recipe's script step (docs/ci/ci-step.sh), run as is in a
# sandbox shaped like a Cirrus KVM container: no daemons, /dev/kvm root:root
# 0600 with qemu as libvirt-qemu, and the runner's rules in legacy iptables
# while `iptables` is nft. The step must bring the host up, boot the
# project's machine, pass its role test (login, sudo, the guest reaches its
# NAT gateway) and destroy it.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox --no-daemons --kvm-owner root:root --kvm-mode 0600 -- "$@"
sandbox_env

iptables-legacy -P FORWARD DROP
iptables-legacy -N DOCKER
iptables-legacy -A FORWARD -o docker0 -j DOCKER

proj=$(mktemp -d /tmp/kvmdrive-ci-step.XXXXXX)
bin=$(mktemp -d /tmp/kvmdrive-ci-bin.XXXXXX)
trap 'rm -rf "$proj" "$bin"' EXIT
ln -s "$KVMDRIVE" "$bin/kvmdrive"     # "installed": the step skips cargo install
box=$(test_box) || { fail "no test box"; finish; exit; }
printf 'defaults:\n  box: %s\n  memory: 512\nmachines:\n  - name: default\n' "$box" >"$proj/kvmdrive.yml"

t0=$(now_ms)
(cd "$proj" && PATH=$bin:$PATH ROLE_TESTS= "$REPO/docs/ci/ci-step.sh") >"$proj.log" 2>&1
rc=$?
sed 's/^/  | /' "$proj.log"
echo "ci step: $(( ($(now_ms) - t0) / 1000 )) s"
check "the CI step succeeds" test "$rc" = 0
check "it fixed kvm-access and the iptables backend" bash -c "grep -q 'fix (kvm-access)' '$proj.log' && grep -q 'fix (iptables-backend)' '$proj.log'"
check "the role test reached the gateway" grep -q 'guest reaches its gateway' "$proj.log"
check "nothing is left in libvirt" test -z "$(virsh -q list --all --name)"
rm -f "$proj.log"
finish
