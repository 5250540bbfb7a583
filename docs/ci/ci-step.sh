#!/usr/bin/env bash
# docs/ci/ci-step.sh — the lines the CI recipes (cirrus.yml, github-actions.yml)
# run, as one script, for a CI system without a recipe here. Nothing from
# kvmdrive's repository is needed at run time: the recipes inline these lines,
# and tests/host/ci-step.sh runs them from cirrus.yml itself.
#
# A KVM-enabled container (Cirrus CI `kvm: true`, `docker run --device
# /dev/kvm`, ...) is not a ready libvirt host: no systemd (so no dbus,
# virtlogd, libvirtd), /dev/kvm root:root 0600 while libvirt runs qemu as
# libvirt-qemu, and maybe the runner's rules in legacy iptables while
# `iptables` is nft. `kvmdrive host up --fix` deals with all of it.
#
# Run it as root from the role's directory (where kvmdrive.yml is), with qemu,
# libvirt (libvirt-dev, pkg-config) and a Rust toolchain installed.
#   KVMDRIVE_GIT, KVMDRIVE_REV  where kvmdrive comes from: a git URL and a pinned commit
#   KVMDRIVE_ROOT               `cargo install --root` (cache it, keyed by the rev)
#   KVMDRIVE_HOME               kvmdrive's home; cache its boxes/ (keyed by kvmdrive.yml)
set -euo pipefail
: "${KVMDRIVE_GIT:?the kvmdrive git URL}" "${KVMDRIVE_REV:?the kvmdrive commit}"
KVMDRIVE_ROOT=${KVMDRIVE_ROOT:-$HOME/.kvmdrive}
export PATH=$KVMDRIVE_ROOT/bin:$PATH

[ -x "$KVMDRIVE_ROOT/bin/kvmdrive" ] ||
    cargo install --locked --root "$KVMDRIVE_ROOT" --git "$KVMDRIVE_GIT" --rev "$KVMDRIVE_REV" kvmdrive
kvmdrive --version
kvmdrive host up --fix     # daemons, /dev/kvm for qemu's user, iptables backend, ip_forward
kvmdrive up                # the machines of kvmdrive.yml (boxes from the cache)
# The role's tests: replace with yours.
kvmdrive ssh -- 'sudo -n true && gw=$(ip -4 route show default | cut -d" " -f3) && timeout 5 bash -c "exec 3<>/dev/tcp/$gw/53" && echo "guest reaches its gateway $gw"'
kvmdrive destroy
