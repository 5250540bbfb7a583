#!/usr/bin/env bash
# Scenario: the probe's verdict agrees with what a real guest does.
# `host check --probe` boots the probe guest (long mode, paging, an IDT,
# `int3` and `iretq`) under KVM with each CPU mode and under TCG. Then the
# bundled box boots under KVM (`accel: kvm`): if it dies with a KVM internal
# error the verdict must be TCG, if it reaches SSH the verdict must be KVM
# (passes on hosts where KVM works and where it does not). A real guest's
# KVM failure is recorded: `host check` then reports it, and an `up` with
# `accel: auto` goes straight to TCG, saying why in one line.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox -- "$@"
sandbox_env

# kvm_runs_guests_summary < JSON: the kvm-runs-guests finding as "status|summary|saw".
kvm_finding() { json "next(f['status']+'|'+f['summary']+'|'+f['saw'] for f in j['findings'] if f['check']=='kvm-runs-guests')"; }

t0=$(now_ms)
out=$("$KVMDRIVE" --json host check --probe)
echo "host check --probe: $(( $(now_ms) - t0 )) ms"
python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("  probe:", {l: o["result"] for l, o in j["facts"]["probe"]["results"]})' "$out"
check "the probe guest runs under TCG" python3 -c '
import json,sys; j=json.loads(sys.argv[1]); r={l: o["result"] for l, o in j["facts"]["probe"]["results"]}
assert r["tcg/qemu64"] == "ran", r' "$out"
verdict=$(kvm_finding <<<"$out")
echo "  verdict: $verdict"
case $verdict in
    ok\|*) probe_says=kvm ;;
    warn\|use\ TCG*) probe_says=tcg ;;
    *) probe_says=unknown ;;
esac
check "the probe result is cached" test -s "$KVMDRIVE_CACHE_DIR/kvm-probe.json"

t0=$(now_ms)
out=$("$KVMDRIVE" --json host check)
ms=$(( $(now_ms) - t0 ))
echo "host check (cached probe): $ms ms"
check "a plain check reuses the cached probe" grep -q "cached" <<<"$(kvm_finding <<<"$out")"
check "a plain check takes < 1 s" test "$ms" -lt 1000

# What a real guest does under KVM: the bundled box with accel: kvm.
box=$(test_box) || exit 1
proj=$(mktemp -d /tmp/kvmdrive-host-probe.XXXXXX)
trap '"$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1; rm -rf "$proj"' EXIT
# A named CPU model: host-passthrough aborts on kvm_pvm ("failed to set MSR").
printf 'defaults:\n  box: %s\n  memory: 512\n  accel: kvm\n  cpu_mode: custom\n  cpu_model: qemu64\n  boot_timeout: 90\n' "$box" >"$proj/kvmdrive.yml"
t0=$(now_ms)
up=$("$KVMDRIVE" -C "$proj" up 2>&1); rc=$?
echo "up with accel: kvm: rc $rc, $(( ($(now_ms) - t0) / 1000 )) s"
sed 's/^/  | /' <<<"$up" | tail -n 8
if ((rc == 0)) && "$KVMDRIVE" -C "$proj" ssh default -- true; then
    real=kvm
elif grep -q "KVM internal error" <<<"$up"; then
    real=tcg
else
    real=unknown
fi
echo "a real guest under KVM: $real; the probe says: $probe_says"
check "a real guest under KVM either reaches SSH or dies with a KVM error" test "$real" != unknown
check "the probe's verdict agrees with the real guest ($probe_says = $real)" test "$probe_says" = "$real"
"$KVMDRIVE" -C "$proj" destroy >/dev/null 2>&1

# Experience corrects the verdict: the record, `host check`, `accel: auto`.
out=$("$KVMDRIVE" --json host check)
sed -i 's/accel: kvm/accel: auto/' "$proj/kvmdrive.yml"
if [[ $real == tcg ]]; then
    check "the real guest's KVM failure is recorded" test -s "$KVMDRIVE_CACHE_DIR/kvm-failure.json"
    check "host check reports it" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-runs-guests"][0]
assert f["status"]=="warn" and "KVM cannot run guests on this host" in f["summary"] and "died under KVM" in f["saw"] and "KVM internal error" in f["saw"], f' "$out"
    t0=$(now_ms)
    up=$("$KVMDRIVE" -C "$proj" up 2>&1); rc=$?
    echo "up with accel: auto after the failure: rc $rc, $(( ($(now_ms) - t0) / 1000 )) s"
    sed 's/^/  | /' <<<"$up" | tail -n 8
    check "up with accel: auto succeeds" test "$rc" = 0
    check "up says in one line why it uses TCG" grep -q "KVM cannot run guests on this host (guest .* died under KVM" <<<"$up"
    check "up went straight to TCG (no KVM retry)" not grep -q "retrying under TCG" <<<"$up"
    check "the machine runs under TCG" test "$(virsh dumpxml "$(virsh list --name | grep -m1 kvmdrive)" | grep -o "domain type='[a-z]*'")" = "domain type='qemu'"
    check "ssh works" "$KVMDRIVE" -C "$proj" ssh default -- true
else
    check "no KVM failure recorded when KVM runs guests" test ! -e "$KVMDRIVE_CACHE_DIR/kvm-failure.json"
    check "host check says use KVM" grep -q "^ok|" <<<"$(kvm_finding <<<"$out")"
fi
finish
