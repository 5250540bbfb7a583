#!/usr/bin/env bash
# End to end, inside the sandbox: Molecule with the driver's `reuse: true` on
# the sample role's one-platform scenario. `molecule test` twice: the first
# boots and parks the machine, the second reverts to its pristine snapshot
# (no boot; timings printed, not asserted); `molecule reset` removes the
# parked machine: no domain, network, volume or parked state left.
# The venv (tests/molecule-venv; KVMDRIVE_VENV picks another) must exist:
# running this script outside the sandbox makes it.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
if [ "${KVMDRIVE_SANDBOX:-}" != 1 ]; then
    "$REPO/tests/molecule-venv" >/dev/null || { echo "cannot make the Molecule venv"; exit 1; }
fi
ensure_sandbox "$@"

venv=$("$REPO/tests/molecule-venv") || { echo "no Molecule venv: run tests/molecule-venv outside the sandbox"; exit 1; }
export PATH="$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
unset KVMDRIVE_BIN
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
KVMDRIVE_BOX=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
export KVMDRIVE_BOX

work=$(mktemp -d /tmp/kvmdrive-molecule-reuse.XXXXXX)
export KVMDRIVE_HOME=${KVMDRIVE_HOME:-$HOME/.local/share/kvmdrive} HOME="$work/home"
mkdir -p "$HOME"
cp -r "$REPO/tests/fixtures/sample-role" "$work/sample-role"
role="$work/sample-role"
sed -i 's/^  name: molecule-kvmdrive$/  name: molecule-kvmdrive\n  reuse: true/' "$role/molecule/single/molecule.yml"
# The copy's verify also writes the guest's boot id to $BOOT_ID_FILE: a run that
# reverted to the pristine snapshot sees the boot id of the first run's boot.
cat > "$role/molecule/single/verify-boot-id.yml" <<'YAML'
---
- name: Verify
  ansible.builtin.import_playbook: ../default/verify.yml
- name: Record the guest's boot id
  hosts: all
  gather_facts: false
  tasks:
    - name: Read the boot id
      ansible.builtin.command: cat /proc/sys/kernel/random/boot_id
      register: boot_id
      changed_when: false
    - name: Write it on the controller
      ansible.builtin.copy:
        content: "{{ boot_id.stdout }}\n"
        dest: "{{ lookup('env', 'BOOT_ID_FILE') }}"
        mode: "0644"
      delegate_to: localhost
YAML
sed -i 's|^    verify: ../default/verify.yml$|    verify: verify-boot-id.yml|' "$role/molecule/single/molecule.yml"
trap 'cd "$role" && molecule reset -s single >/dev/null 2>&1; rm -rf "$work"' EXIT
cd "$role"
now() { date +%s%N; }
elapsed() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }

for run in 1 2; do
    t0=$(now)
    BOOT_ID_FILE=$work/boot-id-$run molecule test -s single > "$work/test$run.log" 2>&1
    rc=$?
    echo "timing: molecule test with reuse, run $run: $(elapsed "$t0")"
    check "molecule test run $run passes (rc $rc)" test "$rc" = 0
    [ "$rc" = 0 ] || tail -n 60 "$work/test$run.log"
    # Molecule's log does not show the driver's lines: ask kvmdrive and libvirt.
    parked=$(kvmdrive gc | awk '{print $1}')
    check "run $run parked its machine (kvmdrive gc lists: ${parked:-nothing})" test -n "$parked"
    check "the parked machine keeps its pristine snapshot" \
        bash -c "virsh snapshot-list '${parked:-none}' --name | grep -qx kvmdrive-pristine"
done
check "both runs recorded the guest's boot id" test -s "$work/boot-id-1" -a -s "$work/boot-id-2"
check "run 2's guest has run 1's boot id (no boot: $(cat "$work/boot-id-2" 2>/dev/null))" \
    cmp -s "$work/boot-id-1" "$work/boot-id-2"
check "a domain is left parked between runs" bash -c "test -n \"\$(virsh list --all --name | grep -v '^$')\""

check "molecule reset" molecule reset -s single
check "no domain left" bash -c "test -z \"\$(virsh list --all --name | grep -v '^$')\""
check "no network left" bash -c "! virsh net-list --all --name | grep -q kvmdrive-"
check "only the box's base volume is left in the pool" \
    bash -c "! virsh vol-list kvmdrive | awk 'NR>2 {print \$1}' | grep -v '^box-' | grep -q ."
check "no parked machine left" test -z "$(kvmdrive gc)"

finish
