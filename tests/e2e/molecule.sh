#!/usr/bin/env bash
# End to end for role testing, inside the sandbox, with the bundled box.
# 1-3 run scenarios whose converge is one task (tests/fixtures/quick: what
# is under test here is the driver and kvmdrive's steps, not Ansible's work
# in the guest; the sample role's full run is in tests/e2e/long/):
#   1. Molecule 26 + molecule-kvmdrive: `molecule test` on two platforms
#      (create, converge, idempotence, verify; then `molecule list`,
#      `molecule login`, and `molecule destroy`), nothing left behind;
#   1b. `molecule test` of a one-machine scenario with the driver's
#      `mitogen: true` (its verify passes only under Mitogen);
#   2. `kvmdrive test` without Molecule on the same scenario, then the
#      machine interface on its machines (create --json, inventory with plain
#      ansible, kvmdrive verify with `mitogen: true`, a failing idempotence,
#      destroy), nothing left behind;
#   3. a scenario written for molecule-vagrant, driver renamed only (the
#      sample role's molecule/vagrant/molecule.yml as it is, its playbooks
#      ../default/*.yml resolving to the quick ones), full `molecule test`;
#      and a scenario verified by Testinfra;
#   4. on the sample role, create + verify only: Vagrantfile lines (the role
#      synced at /vagrant, an NFS folder copied by rsync, a provisioner),
#      `driver: kvm` + host-passthrough, a routed DHCP network;
#   5. with KVMDRIVE_E2E_LONG=1 (`scripts/test --long`), a two-node
#      private-network scenario (networks.sh runs the same machinery from
#      kvmdrive.yml in CI; the key translation is unit-tested).
# Molecule runs with PATH = the venv's bin + system dirs and no KVMDRIVE_BIN:
# the plugin finds the kvmdrive its wheel installed into the venv.
# The venv (tests/molecule-venv) must exist: scripts/setup makes it, and
# running this script directly outside the sandbox makes it too.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
if [ "${KVMDRIVE_SANDBOX:-}" != 1 ]; then
    "$REPO/tests/molecule-venv" >/dev/null || { echo "cannot make the Molecule venv"; exit 1; }
fi
ensure_sandbox "$@"

venv=$("$REPO/tests/molecule-venv") || { echo "no Molecule venv: run tests/molecule-venv outside the sandbox"; exit 1; }
# The one-install check: Molecule runs with the venv's bin and the system dirs
# only and no KVMDRIVE_BIN, so the plugin must use the kvmdrive its wheel put
# into the venv (the parts below that call "$KVMDRIVE" name it themselves).
export PATH="$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
unset KVMDRIVE_BIN
check "the venv has its own kvmdrive, the only one on PATH" bash -c \
    "[ -x '$venv/bin/kvmdrive' ] && [ \"\$(type -ap kvmdrive)\" = '$venv/bin/kvmdrive' ]"
check "the plugin's lookup names the venv's kvmdrive" bash -c \
    "[ \"\$('$venv/bin/python' -m molecule_kvmdrive.binary)\" = '$venv/bin/kvmdrive' ]"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
KVMDRIVE_BOX=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
export KVMDRIVE_BOX

work=$(mktemp -d /tmp/kvmdrive-molecule-e2e.XXXXXX)
# Molecule keeps its ephemeral directories under ~/.ansible: a HOME of our own
# (the box cache stays where it was).
export KVMDRIVE_HOME=${KVMDRIVE_HOME:-$HOME/.local/share/kvmdrive} HOME="$work/home"
mkdir -p "$HOME"
cp -r "$REPO/tests/fixtures/sample-role" "$work/sample-role"
cp -r "$REPO/tests/fixtures/quick" "$work/quick"
cp -r "$work/sample-role/molecule/vagrant" "$work/quick/molecule/vagrant"
role="$work/sample-role" quick="$work/quick"
# On the way out, machines a failed step left: the plugin's state dirs
# (EPHEMERAL/kvmdrive) and kvmdrive test's, destroyed by kvmdrive directly
# (a `molecule destroy` per scenario costs an ansible-playbook run each).
trap 'cd /; find "$work/home" -type d -name kvmdrive -path "*molecule*" -print0 2>/dev/null |
      while IFS= read -r -d "" d; do "$KVMDRIVE" --state-dir "$d" destroy >/dev/null 2>&1; done;
      "$KVMDRIVE" -C "$quick/molecule/default" destroy >/dev/null 2>&1; rm -rf "$work"' EXIT
cd "$quick"

now() { date +%s%N; }
elapsed() { echo "$(( ($(now) - $1) / 1000000 )) ms"; }

# Nothing of kvmdrive in libvirt, the pool holds only box base volumes, and no
# kvmdrive state under DIR.
nothing_left() {
    test -z "$(virsh list --all --name | grep -v '^$')" &&
        ! virsh net-list --all --name | grep -q kvmdrive- &&
        ! virsh vol-list kvmdrive 2>/dev/null | awk 'NR>2 {print $1}' | grep -v '^box-' | grep -q . &&
        test -z "$(find "$1" -name kvmdrive -path '*molecule*' -o -name .kvmdrive | head -n 1)"
}

# `molecule test -s NAME` passes (WHAT says what that shows) and leaves nothing.
scenario_passes() {   # NAME WHAT
    local name=$1 what=$2 t0 rc
    t0=$(now)
    molecule test -s "$name" > "$work/$name.log" 2>&1
    rc=$?
    echo "molecule test -s $name took $(elapsed "$t0")"
    check "$what (rc $rc)" test "$rc" = 0
    [ "$rc" = 0 ] || tail -n 60 "$work/$name.log"
    check "nothing left after molecule test -s $name" nothing_left "$work/home"
}

# ---- 1. Molecule ----------------------------------------------------------------
t0=$(now)
molecule test --destroy never > "$work/test.log" 2>&1
rc=$?
echo "molecule test (two platforms, no destroy) took $(elapsed "$t0")"
check "molecule test passes: create, converge, idempotence, verify (rc $rc)" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 60 "$work/test.log"
for step in create converge idempotence verify; do
    check "molecule ran $step" grep -q "\[default > $step\] Executed: Successful" "$work/test.log"
done
check "idempotence held" bash -c "! grep -q 'Idempotence test failed' '$work/test.log'"

list=$(molecule list -f plain 2>&1)
check "molecule list shows both instances, created and converged" bash -c \
    "grep -Eq '^web\s+molecule-kvmdrive\s+ansible\s+default\s+true\s+true' <<<\"\$0\" && grep -Eq '^db\s+molecule-kvmdrive\s+ansible\s+default\s+true\s+true' <<<\"\$0\"" "$list"
[ $? = 0 ] || echo "$list"

# login needs a terminal (it asks `stty size`): script(1) gives it one.
out=$(printf 'echo "on=$(hostname)"; exit\n' | script -qec "molecule login --host web" /dev/null 2>&1 | tr -d '\r')
check "molecule login opens a shell on web" grep -q "on=web" <<<"$out"
[ $? = 0 ] || echo "$out"

t0=$(now)
check "molecule destroy" molecule destroy
echo "molecule destroy took $(elapsed "$t0")"
check "nothing left after molecule destroy" nothing_left "$work/home"
check "instance_config.yml emptied or pruned" bash -c \
    "! find '$work/home' -name instance_config.yml -exec grep -l address {} + | grep -q ."

# ---- 1b. The driver's `mitogen: true` --------------------------------------------
scenario_passes mitogen "molecule test with mitogen: true passes; verify sees Mitogen's interpreter"

# ---- 2. Without Molecule --------------------------------------------------------
scen="$quick/molecule/default"
t0=$(now)
"$KVMDRIVE" -C "$scen" test --destroy never > "$work/kvmdrive-test.log" 2>&1
rc=$?
echo "kvmdrive test (two platforms, no destroy) took $(elapsed "$t0")"
check "kvmdrive test passes (rc $rc)" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 60 "$work/kvmdrive-test.log"
check "kvmdrive test ran idempotence and verify" bash -c \
    "grep -q 'idempotence: nothing changed' '$work/kvmdrive-test.log' && grep -q 'verify: .*verify.yml' '$work/kvmdrive-test.log'"

# The machine interface, as the plugin and CI scripts use it, on those machines.
state="$scen/.kvmdrive"
json=$("$KVMDRIVE" --json -C "$scen" create 2>"$work/create.err")
check "create --json (machines already up) prints one record per instance" python3 - "$json" <<'PY'
import json, os, sys
r = json.loads(sys.argv[1])
assert [x["instance"] for x in r] == ["web", "db"], r
for x in r:
    # ssh_args appears only for machines behind a hypervisor host (hosts:).
    assert sorted(x) == ["address", "host", "identity_file", "instance", "port", "python", "user"], x
    assert x["host"] == "qemu:///system", x
    assert x["python"] == "/usr/bin/python3", x  # found at up: no interpreter discovery
    assert x["user"] == "vagrant" and x["port"] == 22 and os.path.isfile(x["identity_file"]), x
PY
[ $? = 0 ] || { echo "$json"; cat "$work/create.err"; }
cd "$work"
"$KVMDRIVE" --state-dir "$state" inventory > "$work/inventory.yml"
out=$(ansible -i "$work/inventory.yml" app -m ansible.builtin.command -a hostname 2>&1)
check "kvmdrive inventory (state dir only) works with plain ansible, group app" grep -qx "web" <<<"$out"
[ $? = 0 ] || echo "$out"
check "the inventory names the guests' Python (no discovery)" \
    grep -q "ansible_python_interpreter: /usr/bin/python3" "$work/inventory.yml"
# The bundled box keeps the compiled code of Ansible's module payloads
# (boxes/debian-12/files/usr/lib/python3/dist-packages/kvmdrive_ansiballz_cache.py):
# the ad-hoc command above filled the login user's cache; the same again adds nothing.
cached() { "$KVMDRIVE" --state-dir "$state" ssh web -- 'find /var/cache/kvmdrive-ansiballz/$(id -u) -type f | wc -l'; }
n1=$(cached)
ansible -i "$work/inventory.yml" web -m ansible.builtin.command -a hostname > "$work/again.log" 2>&1
n2=$(cached)
check "the box cached the payload's compiled modules ($n1), a repeat found them all ($n2)" \
    test "${n1:-0}" -gt 10 -a "$n1" = "$n2"
printf -- '- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: "true"\n' > "$work/changes.yml"
"$KVMDRIVE" --state-dir "$state" idempotence "$work/changes.yml" > "$work/idem.log" 2>&1
rc=$?
check "idempotence fails with status 1 when a task changes (rc $rc)" test "$rc" = 1
check "idempotence names the task and host" grep -q "\[web\] => ansible.builtin.command" "$work/idem.log"
# kvmdrive's own runner honours the driver's `mitogen: true` too (same machines:
# the driver section is not part of a machine's definition).
cp "$scen/molecule.yml" "$work/molecule.yml.orig"
sed -i 's/^  name: molecule-kvmdrive$/&\n  mitogen: true/' "$scen/molecule.yml"
"$KVMDRIVE" -C "$scen" verify "$quick/molecule/mitogen/verify.yml" > "$work/verify-mitogen.log" 2>&1
rc=$?
check "kvmdrive verify with mitogen: true runs over Mitogen (rc $rc)" test "$rc" = 0
[ "$rc" = 0 ] || tail -n 40 "$work/verify-mitogen.log"
check "... on the same machines, nothing created" bash -c "! grep -q 'starting' '$work/verify-mitogen.log'"
cp "$work/molecule.yml.orig" "$scen/molecule.yml"
check "destroy --state-dir alone finds the machines" "$KVMDRIVE" --state-dir "$state" destroy
check "nothing left after destroy" nothing_left "$quick"
check "the state dir is gone" test ! -e "$state"
cd "$quick"

# ---- 3. A molecule-vagrant scenario, driver renamed --------------------------------
scenario_passes vagrant "the molecule-vagrant scenario passes unchanged"
check "its Vagrant-only keys are named in warnings" grep -q "provider_raw_config_args" "$work/vagrant.log"
scenario_passes testinfra "a scenario verified by Testinfra passes (create, verify, destroy)"
check "... Testinfra ran its 4 tests over the driver's inventory" grep -qE "4 passed" "$work/testinfra.log"

# ---- 4. Vagrantfile lines: synced_folder: true, instance_raw_config_args --------------
# (create, verify, destroy: no converge)
cd "$role"
scenario_passes raw-args "the raw-args scenario passes: role at /vagrant, rsync and NFS folders copied, vm.provision mark once, e1000 NIC on a routed DHCP network"
check "... the NFS folder is said to be an rsync copy" grep -q "synced folder type \`nfs\`: .* by rsync" "$work/raw-args.log"
check "... host-passthrough is said to need KVM (TCG here) or KVM ran it" \
    grep -qE "cpu_mode host-passthrough needs KVM|ready: .*\(KVM\)" "$work/raw-args.log"

if [ "${KVMDRIVE_E2E_LONG:-}" != 1 ]; then
    echo "part 5 (multinode) runs with KVMDRIVE_E2E_LONG=1 (scripts/test --long)"
    finish
    exit
fi

# ---- 5. A molecule-vagrant two-node scenario with private networks ------------------
scenario_passes multinode "the two-node private-network scenario passes"

finish
