#!/usr/bin/env bash
# Scenario: `host check --probe` boots the probe guest (a boot sector) under
# KVM with each CPU mode and under TCG, and answers from what actually ran:
# here (kvm_pvm) KVM creates the VM but the guest never runs, so "use TCG".
# The result is cached: a plain `host check` reuses it and stays fast.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
in_sandbox -- "$@"
sandbox_env

t0=$(now_ms)
out=$("$KVMDRIVE" --json host check --probe)
echo "host check --probe: $(( $(now_ms) - t0 )) ms"
check "the probe ran TCG" python3 -c '
import json,sys; j=json.loads(sys.argv[1]); r=dict((l, o["result"]) for l, o in j["facts"]["probe"]["results"])
print("  probe:", r); assert r["tcg/qemu64"] == "ran", r' "$out"
if grep -qw -e vmx -e svm /proc/cpuinfo; then
    check "real KVM: the probe says use KVM" test "$(finding kvm-runs-guests <<<"$out")" = ok
else
    check "no vmx/svm: the probe says use TCG" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-runs-guests"][0]
assert f["status"]=="warn" and f["summary"].startswith("use TCG") and "probe guest" in f["saw"], f' "$out"
fi
check "the probe result is cached" test -s "$KVMDRIVE_CACHE_DIR/kvm-probe.json"

t0=$(now_ms)
out=$("$KVMDRIVE" --json host check)
ms=$(( $(now_ms) - t0 ))
echo "host check (cached probe): $ms ms"
check "a plain check reuses the cached probe" python3 -c '
import json,sys; f=[f for f in json.loads(sys.argv[1])["findings"] if f["check"]=="kvm-runs-guests"][0]
assert "cached" in f["saw"], f' "$out"
check "a plain check takes < 1 s" test "$ms" -lt 1000
finish
