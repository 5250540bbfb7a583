#!/usr/bin/env bash
# Scenario: the Cirrus CI recipe (docs/ci/cirrus.yml) as a role's repository
# uses it. A fixture role repository gets the recipe as its .cirrus.yml and a
# kvmdrive.yml with the bundled box (served over http on 127.0.0.1, like a
# box_url on the internet). The recipe's own instructions (its env, *_cache
# with fingerprint_script/populate_script, *_script steps and `always`) are
# read from that file and run by a small Cirrus stand-in, twice, each run in a
# fresh sandbox shaped like a Cirrus KVM container (no daemons, /dev/kvm
# root:root 0600 with qemu as libvirt-qemu, the runner's rules in legacy
# iptables while `iptables` is nft):
#   run 1, empty caches: kvmdrive installed the recipe's way (`cargo install
#     --git URL --rev REV`, this repository's HEAD through a file:// URL),
#     host up --fix, up (downloads the box), the role test, destroy;
#   run 2, caches from run 1: no cargo, no box download, same steps pass.
# Standing in for the internet: KVMDRIVE_GIT=file://<this repo>, crates.io
# replaced by a vendored copy of cargo's registry cache (the sandbox has no
# network) through a CARGO_HOME of its own, as a fresh CI container has (so
# this cargo never waits on, or holds, the locks of the host's ~/.cargo).
# cargo builds in a target dir of its own kept between test runs
# ($KVMDRIVE_CI_TARGET, default /var/tmp/kvmdrive-ci-target): the first test
# run compiles every crate, later ones only kvmdrive. apt (packages_script) is
# skipped: the host has the packages.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

BOX_PORT=8739      # fixed: kvmdrive.yml (a cache fingerprint input) names it
CI_TARGET=${KVMDRIVE_CI_TARGET:-/var/tmp/kvmdrive-ci-target}
# The kvmdrive commit the recipe installs: HEAD, or $KVMDRIVE_CI_REV (only
# committed code is visible through git).
CI_REV=$(git -C "$REPO" rev-parse "${KVMDRIVE_CI_REV:-HEAD}")

# ---- inside: one CI run in a fresh sandbox ----------------------------------------
if [[ ${1:-} == --ci-run ]]; then
    work=$2 n=$3 CI_REV=$4
    sandbox_env
    iptables-legacy -P FORWARD DROP
    iptables-legacy -N DOCKER
    iptables-legacy -A FORWARD -o docker0 -j DOCKER
    python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$BOX_PORT" \
        >"$work/http$n.log" 2>&1 &
    server=$!
    for _ in $(seq 50); do curl -fs -o /dev/null "http://127.0.0.1:$BOX_PORT/" && break; sleep 0.1; done
    : >"$work/http$n.log"   # only the CI run's requests
    rc=0
    (cd "$work/role" && CIRRUS_STANDIN_CACHE=$work/cache CIRRUS_STANDIN_SKIP=packages_script \
        CI_OVERRIDE_KVMDRIVE_GIT=file://$REPO CI_OVERRIDE_KVMDRIVE_REV=$CI_REV \
        CI_OVERRIDE_KVMDRIVE_ROOT=$work/run$n/kvmdrive-root CI_OVERRIDE_KVMDRIVE_HOME=$work/run$n/home \
        CARGO_HOME=$work/cargo-home CARGO_NET_RETRY=0 CARGO_TARGET_DIR=$CI_TARGET \
        python3 "$work/cirrus-standin.py" .cirrus.yml) || rc=$?
    kill "$server" 2>/dev/null
    left=$(virsh -q list --all --name | grep -v '^$')
    echo "libvirt domains left: ${left:-none}"
    exit "$rc"
fi

# ---- outside: the fixture, two runs, the checks -------------------------------------
[[ $(id -u) == 0 ]] || { echo "run as root"; exit 1; }
box=$(test_box) || { fail "no test box"; finish; exit; }
rev=$CI_REV
work=$(mktemp -d /var/tmp/kvmdrive-ci-step.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/www" "$work/role/tasks" "$work/cache" "$work/cargo-home"
ln "$box" "$work/www/debian-12.box" 2>/dev/null || cp "$box" "$work/www/debian-12.box"

# crates.io, offline: a vendored copy of that rev's Cargo.lock from cargo's cache,
# kept between runs; the CI's CARGO_HOME config points cargo at it.
lockhash=$(git -C "$REPO" show "$rev:Cargo.lock" | sha256sum | cut -c1-16)
vendor=/var/tmp/kvmdrive-ci-vendor-$lockhash
if [[ ! -d $vendor ]]; then
    src=$(mktemp -d)
    git -C "$REPO" archive "$rev" Cargo.toml Cargo.lock src | tar -x -C "$src"
    cargo vendor --quiet --locked --offline --versioned-dirs --manifest-path "$src/Cargo.toml" "$vendor.tmp" >/dev/null \
        && mv "$vendor.tmp" "$vendor"
    rm -rf "$src" "$vendor.tmp"
fi
[[ -d $vendor ]] || { fail "cannot vendor the crates of $rev's Cargo.lock (cargo fetch --locked first)"; finish; exit; }
printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "%s"\n' "$vendor" \
    >"$work/cargo-home/config.toml"

# The role's repository: a trivial role, kvmdrive.yml, and the recipe copied in.
cp "$REPO/docs/ci/cirrus.yml" "$work/role/.cirrus.yml"
printf -- '- name: a trivial role\n  ansible.builtin.debug:\n    msg: hello\n' >"$work/role/tasks/main.yml"
cat >"$work/role/kvmdrive.yml" <<YML
defaults:
  box: kvmdrive/debian-12
  box_url: http://127.0.0.1:$BOX_PORT/debian-12.box
  memory: 512
YML

# A stand-in for Cirrus: env (recipe values, overridden by CI_OVERRIDE_*),
# caches (fingerprint -> a stored folder; restore on a hit, populate_script on
# a miss, store after a successful task), *_script in order, then `always`.
cat >"$work/cirrus-standin.py" <<'PY'
import hashlib, os, re, shutil, subprocess, sys, time
import yaml

doc = yaml.safe_load(open(sys.argv[1]))
task = doc["task"]
store = os.environ["CIRRUS_STANDIN_CACHE"]
skip = set(os.environ.get("CIRRUS_STANDIN_SKIP", "").split(","))
env = dict(os.environ)

def expand(s):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), str(s))

for block in (doc.get("env", {}), task.get("env", {})):
    for k, v in block.items():
        env[k] = os.environ.get("CI_OVERRIDE_" + k) or expand(v)

def run(name, script):
    text = "\n".join(script) if isinstance(script, list) else str(script)
    print(f"== {name}", flush=True)
    t0 = time.time()
    rc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], env=env).returncode
    print(f"== {name}: exit {rc}, {time.time() - t0:.1f} s", flush=True)
    return rc == 0

ok, uploads = True, []
for key, value in task.items():
    if not ok:
        break
    if key.endswith("_cache"):
        name = key[: -len("_cache")]
        folder = expand(value["folder"])
        fps = value["fingerprint_script"]
        fp = subprocess.run(["bash", "-e", "-o", "pipefail", "-c",
                             "\n".join(fps) if isinstance(fps, list) else fps],
                            env=env, capture_output=True, text=True, check=True).stdout
        saved = os.path.join(store, name + "-" + hashlib.sha256(fp.encode()).hexdigest()[:16])
        if os.path.isdir(saved):
            print(f"cache {name}: hit", flush=True)
            shutil.copytree(saved, folder, symlinks=True, dirs_exist_ok=True)
        else:
            print(f"cache {name}: miss", flush=True)
            os.makedirs(folder, exist_ok=True)
            if "populate_script" in value:
                ok = run(f"{name} populate", value["populate_script"])
            uploads.append((name, folder, saved))
    elif key.endswith("_script"):
        if key in skip:
            print(f"== {key}: skipped", flush=True)
        else:
            ok = run(key, value)
for key, value in task.get("always", {}).items():
    if key.endswith("_script"):
        ok = run(key, value) and ok
if ok:
    for name, folder, saved in uploads:
        shutil.copytree(folder, saved, symlinks=True)
        print(f"cache {name}: stored", flush=True)
sys.exit(0 if ok else 1)
PY

# The GitHub Actions workflow runs the same lines (it cannot run here): the
# same install command, the same step lines, caches keyed as in Cirrus.
gh=$(python3 - "$REPO/docs/ci/cirrus.yml" "$REPO/docs/ci/github-actions.yml" "$REPO/docs/ci/ci-step.sh" <<'PY'
import re, sys, yaml
cirrus, gh = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
script = [l.split("  #")[0].strip() for l in open(sys.argv[3])]
task = cirrus["task"]
lines = lambda v: [v] if isinstance(v, str) else list(v)
want = [l for k in ("host_script", "up_script", "role_tests_script") for l in lines(task[k])]
want += lines(task["always"]["destroy_script"])
steps = {s.get("name"): s for s in gh["jobs"]["role-tests"]["steps"]}
body = steps["Role tests"]["run"].split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0].splitlines()
assert body == want, f"GitHub step lines {body} != Cirrus lines {want}"
install = steps["Install kvmdrive (on a cache miss)"]["run"].strip()
assert install == task["kvmdrive_cache"]["populate_script"].strip(), install
for l in want + [install]:
    assert l in script, f"docs/ci/ci-step.sh lacks: {l}"
assert "KVMDRIVE_REV" in steps["Cache the kvmdrive binary"]["with"]["key"]
assert "hashFiles('kvmdrive.yml'" in steps["Cache the boxes"]["with"]["key"]
assert set(cirrus["env"]) >= {"KVMDRIVE_GIT", "KVMDRIVE_REV"} <= set(gh["env"])
print("ok")
PY
)
check "GitHub Actions and docs/ci/ci-step.sh: the same install command and step lines as Cirrus; caches keyed by rev and kvmdrive.yml ($gh)" test "$gh" = ok

# Warm: the kept target dir was built for this Cargo.lock (a changed lock,
# e.g. a new dependency, recompiles what it touches: that is no failure).
lock_hash=$(git -C "$REPO" show "$CI_REV:Cargo.lock" | sha256sum | cut -d' ' -f1)
warm=0
[[ -d $CI_TARGET/release && $(cat "$CI_TARGET/.cargo-lock-sha256" 2>/dev/null) == "$lock_hash" ]] && warm=1
# cargo took a git package's units in a kept target dir as fresh although the
# rev had changed (a binary from an older rev got installed): drop kvmdrive's
# own units, so run 1 compiles the pinned rev (a CI's install starts from an
# empty target dir anyway; only the dependencies are kept).
rm -rf "$CI_TARGET"/release/.fingerprint/kvmdrive-* "$CI_TARGET"/release/deps/kvmdrive-* \
    "$CI_TARGET"/release/deps/libkvmdrive-*
before=$(host_state)
declare -A rc secs
for n in 1 2; do
    what="empty caches"; [[ $n == 2 ]] && what="caches from run 1"
    echo "== CI run $n ($what, kvmdrive $rev)"
    t0=$(now_ms)
    "$REPO/tests/sandbox/run" --no-daemons --kvm-owner root:root --kvm-mode 0600 -- \
        "$0" --ci-run "$work" "$n" "$rev" >"$work/run$n.log" 2>&1
    rc[$n]=$?
    secs[$n]=$(( ($(now_ms) - t0) / 1000 ))
    sed 's/^/  | /' "$work/run$n.log"
    echo "CI run $n: ${secs[$n]} s (exit ${rc[$n]})"
done
after=$(host_state)
((rc[1] == 0)) && echo "$lock_hash" >"$CI_TARGET/.cargo-lock-sha256"

log1=$work/run1.log log2=$work/run2.log
check "run 1 succeeds" test "${rc[1]}" = 0
check "run 1: both caches miss; cargo installs kvmdrive from the pinned git rev" bash -c \
    "grep -q '^cache kvmdrive: miss' '$log1' && grep -q '^cache boxes: miss' '$log1' && grep -q 'Installed package .kvmdrive v.* (file://$REPO?rev=$rev#' '$log1'"
check "run 1: cargo install puts both binaries in the root (kvmdrive execs kvmdrive-engine beside it)" \
    grep -q "Installed package .kvmdrive v.*executables .kvmdrive., .kvmdrive-engine." "$log1"
echo "run 1 compiled $(grep -c '^ *Compiling ' "$log1") crates; install: $(grep -o 'kvmdrive populate: exit [0-9]*, [0-9.]* s' "$log1")"
if ((warm)); then
    check "run 1: no crate but kvmdrive is compiled (the CI target dir is kept)" bash -c \
        "! grep '^ *Compiling ' '$log1' | grep -qv '^ *Compiling kvmdrive '"
fi
check "run 1: kvmdrive itself is compiled from the pinned rev" \
    grep -q "^ *Compiling kvmdrive v.* (.*/git/checkouts/.*/${rev:0:7})" "$log1"
check "run 1: up downloads the box from its box_url" grep -q "downloading http://127.0.0.1:$BOX_PORT/debian-12.box" "$log1"
check "run 1: host up fixed kvm-access and the iptables backend" bash -c \
    "grep -q 'fix (kvm-access)' '$log1' && grep -q 'fix (iptables-backend)' '$log1'"
check "run 1: the role test reached the gateway" grep -q 'guest reaches its gateway' "$log1"
check "run 1: both caches stored" bash -c "grep -q '^cache kvmdrive: stored' '$log1' && grep -q '^cache boxes: stored' '$log1'"
check "run 2 succeeds" test "${rc[2]}" = 0
check "run 2: both caches hit, nothing populated" bash -c \
    "grep -q '^cache kvmdrive: hit' '$log2' && grep -q '^cache boxes: hit' '$log2' && ! grep -q 'populate' '$log2'"
check "run 2: no cargo, no box download (no request reached the box server)" bash -c \
    "! grep -Eq 'Compiling|Installing|downloading' '$log2' && ! grep -q 'GET /debian-12.box' '$work/http2.log'"
check "run 2: kvmdrive from the cached binary passes the role test" grep -q 'guest reaches its gateway' "$log2"
check "nothing is left in libvirt after either run" bash -c \
    "[ \"\$(grep -c '^libvirt domains left: none' '$log1' '$log2' | grep -c ':1')\" = 2 ]"
if [[ $before == "$after" ]]; then ok "host state unchanged (/dev/kvm, alternatives, qemu.conf, ip_forward, legacy rules, /run)"
else fail "the host's state changed"; diff <(echo "$before") <(echo "$after"); fi
finish
