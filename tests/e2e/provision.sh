#!/usr/bin/env bash
# End to end with the bundled box, inside the sandbox, on ONE machine:
# synced folders of type rsync, 9p and virtiofs (a project file readable at
# each dest; after a change `kvmdrive rsync` updates the copy, the shared ones
# see it live); shell (inline and path), file and ansible provisioners each
# leave a mark; a second `up` does not repeat them, `kvmdrive provision`
# does; a failing provisioner names the machine and itself and leaves the
# machine up; `reload` keeps the address and the key.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
PATH=/var/tmp/kvmdrive-venv/bin:$PATH
proj=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
chmod 0755 "$proj"   # qemu (libvirt-qemu) must read the shared directories
trap 'cd /; "$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
cd "$proj"
mkdir -p share/sub files
echo one > share/hello.txt
echo keep > share/sub/nested.txt
echo secret > share/excluded.txt
cat > setup.sh <<'SH'
#!/bin/sh
echo "path $1 $GREETING" >> /var/tmp/marks
SH
echo copied > files/a.txt
cat > site.yml <<'YML'
- hosts: all
  gather_facts: false
  tasks:
    - name: Leave a mark
      ansible.builtin.shell: echo "ansible {{ color }}" >> /var/tmp/marks
      become: true
YML
cat > kvmdrive.yml <<YML
defaults:
  box: $box
  memory: 512
machines:
  - name: prov
    synced_folders:
      - {src: share, dest: /vagrant, exclude: [excluded.txt]}
      - {src: share, dest: /mnt/ninep, type: 9p}
      - {src: share, dest: /mnt/vfs, type: virtiofs}
    provision:
      - {type: shell, inline: 'echo "inline \$(id -un)" >> /var/tmp/marks'}
      - {type: shell, path: setup.sh, args: [arg1], env: {GREETING: hi}, name: script}
      - {type: file, source: files, destination: /tmp/files}
      - {type: file, source: files/a.txt, destination: "~/a-copy.txt"}
      - {type: ansible, playbook: site.yml, extra_vars: {color: blue}}
YML

in_guest() { "$KVMDRIVE" ssh prov -- "$@" 2>&1; }

start=$(date +%s%N)
"$KVMDRIVE" up 2>&1 | tee up.log
code=${PIPESTATUS[0]}
echo "up took $(( ($(date +%s%N) - start) / 1000000 )) ms"
# The bundled box's kernel has 9p and virtiofs (modules, loaded on mount).
echo "guest filesystems: $(in_guest 'grep -wE "9p|virtiofs" /proc/filesystems | tr -s "\t\n" "  "')"
check "up with the synced folders and five provisioners succeeds" test "$code" -eq 0
out=$(in_guest 'findmnt -no FSTYPE /mnt/ninep; findmnt -no FSTYPE /mnt/vfs')
check "/mnt/ninep is a 9p mount and /mnt/vfs a virtiofs one ($(tr '\n' ' ' <<<"$out"))" \
    test "$out" = $'9p\nvirtiofs'
check "provisioner output is streamed with the machine's name" grep -q "^prov: .*provisioner 5/5: ansible" up.log

for d in /vagrant /mnt/vfs /mnt/ninep; do
    out=$(in_guest cat "$d/hello.txt")
    check "the project file is readable at $d ($out)" test "$out" = one
done
check "rsync copies nested files" test "$(in_guest cat /vagrant/sub/nested.txt)" = keep
check "rsync leaves out the excluded file" bash -c "! '$KVMDRIVE' ssh prov -- test -e /vagrant/excluded.txt"
check "rsync copies are owned by vagrant" test "$(in_guest stat -c %U /vagrant/hello.txt)" = vagrant

echo two > share/hello.txt
check "9p sees a change live" test "$(in_guest cat /mnt/ninep/hello.txt)" = two
check "virtiofs sees a change live" test "$(in_guest cat /mnt/vfs/hello.txt)" = two
check "the rsync copy is not updated before kvmdrive rsync" test "$(in_guest cat /vagrant/hello.txt)" = one
check "kvmdrive rsync succeeds" "$KVMDRIVE" rsync
check "kvmdrive rsync updates the copy" test "$(in_guest cat /vagrant/hello.txt)" = two
"$KVMDRIVE" rsync-auto > rsync-auto.log 2>&1 &
auto=$!
sleep 8   # its first copy
echo three > share/hello.txt
for _ in $(seq 40); do
    [ "$(in_guest cat /vagrant/hello.txt)" = three ] && break
    sleep 1
done
check "rsync-auto copies a change by itself" test "$(in_guest cat /vagrant/hello.txt)" = three
kill -INT "$auto"; wait "$auto"
check "rsync-auto stops on Ctrl-C (SIGINT)" test $? -eq 0

marks=$(in_guest cat /var/tmp/marks)
echo "marks after up: $marks"
check "inline shell ran privileged" grep -qx "inline root" <<<"$marks"
check "path shell ran with its args and env" grep -qx "path arg1 hi" <<<"$marks"
check "ansible ran with extra_vars" grep -qx "ansible blue" <<<"$marks"
check "file copied a directory" test "$(in_guest cat /tmp/files/a.txt)" = copied
check "file copied a file into the home directory" test "$(in_guest cat a-copy.txt)" = copied
check "three marks after the first up" test "$(wc -l <<<"$marks")" -eq 3

check "a second up succeeds" "$KVMDRIVE" up
check "a second up does not provision again" test "$(in_guest wc -l /var/tmp/marks | cut -d' ' -f1)" -eq 3
out=$("$KVMDRIVE" --json provision 2>/dev/null)
check "kvmdrive provision succeeds" test $? -eq 0
check "provision --json prints one record per provisioner with exit status 0" python3 - "$out" <<'PY'
import json, sys
runs = [json.loads(l) for l in sys.argv[1].splitlines()]
assert [r["index"] for r in runs] == [1, 2, 3, 4, 5], runs
assert all(r["exit_status"] == 0 and r["machine"] == "prov" for r in runs), runs
assert runs[4]["type"] == "ansible", runs
PY
check "kvmdrive provision runs them again" test "$(in_guest wc -l /var/tmp/marks | cut -d' ' -f1)" -eq 6
check "provision --provision-with script runs only that one" "$KVMDRIVE" provision --provision-with script
check "... one more mark, the script's" test "$(in_guest tail -n 1 /var/tmp/marks)/$(in_guest wc -l /var/tmp/marks | cut -d' ' -f1)" = "path arg1 hi/7"
check "up --provision-with script runs it again on the running machine" "$KVMDRIVE" up --provision-with script
check "... and only it (8 marks, the script's last)" test "$(in_guest tail -n 1 /var/tmp/marks)/$(in_guest wc -l /var/tmp/marks | cut -d' ' -f1)" = "path arg1 hi/8"
out=$("$KVMDRIVE" provision --provision-with nope 2>&1); code=$?
check "provision --provision-with an unknown name fails, naming it ($code)" \
    bash -c "test $code -ne 0 && grep -q 'no provisioner named \`nope\`' <<<\"\$1\"" _ "$out"
check "... before running anything" bash -c "! grep -q 'provisioner 1/' <<<\"\$1\"" _ "$out"

before=$("$KVMDRIVE" --json status)
check "reload succeeds" "$KVMDRIVE" reload
after=$("$KVMDRIVE" --json status)
check "reload keeps the address and the key" python3 - "$before" "$after" <<'PY'
import json, sys
b, a = (json.loads(x)[0] for x in sys.argv[1:3])
assert a["state"] == "running", a
assert (b["address"], b["identity_file"]) == (a["address"], a["identity_file"]), (b, a)
PY
check "reload does not provision again" test "$(in_guest wc -l /var/tmp/marks | cut -d' ' -f1)" -eq 8
check "9p is mounted again after reload" test "$(in_guest cat /mnt/ninep/hello.txt)" = three
check "virtiofs is mounted again after reload" test "$(in_guest cat /mnt/vfs/hello.txt)" = three

# A failing provisioner: exit 1, names machine and provisioner, machine stays up.
python3 - <<'PY'
import re
t = open("kvmdrive.yml").read()
t = t.replace("      - {type: file, source: files, destination: /tmp/files}\n",
              "      - {type: shell, inline: 'exit 7', name: broken}\n")
open("kvmdrive.yml", "w").write(t)
PY
out=$("$KVMDRIVE" provision 2>&1); code=$?
echo "$out" | tail -n 4
check "a failing provisioner exits 1" test "$code" -eq 1
check "the error names the machine and the provisioner" grep -q "provisioner 3 (shell (broken)) failed in prov with exit status 7" <<<"$out"
check "the machine stays up" bash -c "'$KVMDRIVE' status | grep -q 'prov  *running'"

check "destroy removes it" "$KVMDRIVE" destroy
finish
