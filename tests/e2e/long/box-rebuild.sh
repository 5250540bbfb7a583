#!/usr/bin/env bash
# End to end, inside the sandbox: a project with `box: ./my.box`. Machine `a`
# comes up from build A (the bundled box); the file is rebuilt (build B: the
# same box repacked with one more file); `up b` says the box changed, imports
# build B as a new base volume and boots from it, while `a` keeps its backing
# file and keeps working; overlays are qcow2 compat 1.1; `destroy` leaves
# both base volumes in the pool.
set -uo pipefail
source "$(dirname "$0")/../lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
work=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
trap 'cd /; "$KVMDRIVE" -C "$work/proj" destroy >/dev/null 2>&1; rm -rf "$work"' EXIT
mkdir -p "$work/proj"
export KVMDRIVE_HOME="$work/home"   # a cache of its own
cd "$work/proj"
cp "$box" my.box
cat > kvmdrive.yml <<'YML'
defaults:
  box: ./my.box
machines:
  - name: a
  - name: b
YML

bases() { virsh -q vol-list kvmdrive | awk '{print $1}' | grep '^box-my-0-' | sort; }
overlay() { virsh -q vol-list kvmdrive | awk -v m="-$1.qcow2" '$1 ~ m"$" {print $2}'; }
backing() { qemu-img info -U --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename",""))'; }

t0=$(date +%s.%N)
check "up a (build A)" "$KVMDRIVE" up a
t1=$(date +%s.%N)
base_a=$(bases)
check "one base volume for build A ($base_a)" test "$(echo "$base_a" | wc -w)" = 1
ov_a=$(overlay a)
check "a's overlay is qcow2 compat 1.1" bash -c "qemu-img info -U '$ov_a' | grep -q 'compat: 1.1'"
check "a's overlay has lazy refcounts" bash -c "qemu-img info -U '$ov_a' | grep -q 'lazy refcounts: true'"

# Build B: the same box as an uncompressed tar with one more file.
echo "rebuilt $(date -u +%FT%TZ)" > "$work/REBUILT"
gzip -dc "$box" > "$work/b.box"
tar -rf "$work/b.box" -C "$work" REBUILT
mv "$work/b.box" my.box

t2=$(date +%s.%N)
out=$("$KVMDRIVE" up b 2>&1); rc=$?
t3=$(date +%s.%N)
echo "$out" | sed 's/^/    | /'
check "up b after the rebuild" test "$rc" = 0
check "up says the box changed, in one line" \
    test "$(echo "$out" | grep -c '^box ./my.box changed since it was added: using the new content$')" = 1
all=$(bases)
base_b=$(comm -13 <(echo "$base_a") <(echo "$all"))
check "a new base volume for build B ($base_b)" test "$(echo "$base_b" | wc -w)" = 1
pool=$(dirname "$ov_a")
check "b is backed by build B" test "$(backing "$(overlay b)")" = "$pool/$base_b"
check "a keeps build A as its backing file" test "$(backing "$ov_a")" = "$pool/$base_a"
sha_b=$(sha256sum my.box | cut -d' ' -f1)
check "the cache holds build B" grep -q "\"$sha_b\"" "$KVMDRIVE_HOME"/boxes/my/0/*/libvirt/kvmdrive-source.json
out=$("$KVMDRIVE" ssh b -- hostname 2>&1)
check "ssh b works ($out)" test "$out" = b
out=$("$KVMDRIVE" ssh a -- hostname 2>&1)
check "ssh a still works ($out)" test "$out" = a

check "destroy b" "$KVMDRIVE" destroy b
check "both base volumes stay after destroy b" test "$(bases)" = "$all"
out=$("$KVMDRIVE" ssh a -- true 2>&1)
check "a still works after destroy b" test -z "$out"
check "destroy" "$KVMDRIVE" destroy
check "both base volumes stay after destroy" test "$(bases)" = "$all"
printf 'timings: up a %.1f s (fresh cache), up b after the rebuild %.1f s\n' \
    "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
finish
