#!/usr/bin/env bash
# docs/ci/ci-step.sh — the one CI script step for Ansible role tests in a
# KVM-enabled container (Cirrus CI `kvm: true`, `docker run --device
# /dev/kvm`, ...). Such a container is not a ready libvirt host: no systemd
# (so no dbus, virtlogd, libvirtd), /dev/kvm root:root 0600 while libvirt
# runs qemu as libvirt-qemu, and maybe the runner's rules in legacy iptables
# while `iptables` is nft. `kvmdrive host up --fix` deals with all of it.
#
# Run it as root from the project directory (where kvmdrive.yml is).
#   KVMDRIVE_SRC  a kvmdrive checkout to install from when `kvmdrive` is not on PATH
#   ROLE_TESTS    the command that tests the role (default: a smoke test that
#                 logs in, uses sudo, and reaches the guest's NAT gateway)
# tests/host/ci-step.sh runs this very file in the test sandbox, so it cannot rot.
set -euo pipefail
step() { printf '\n== %s\n' "$*"; }

step "install kvmdrive"
if ! command -v kvmdrive >/dev/null; then
    cargo install --locked --root /usr/local --path "${KVMDRIVE_SRC:?set KVMDRIVE_SRC to a kvmdrive checkout}"
fi
kvmdrive --version

step "make this container a libvirt host"
kvmdrive host up --fix

step "machines up"
kvmdrive up

step "role tests"
if [[ -n ${ROLE_TESTS:-} ]]; then
    bash -c "$ROLE_TESTS"
else
    kvmdrive ssh -- 'sudo -n true && gw=$(ip -4 route show default | cut -d" " -f3) &&
        timeout 5 bash -c "exec 3<>/dev/tcp/$gw/53" && echo "guest reaches its gateway $gw"'
fi

step "clean up"
kvmdrive destroy
