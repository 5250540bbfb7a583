#!/usr/bin/env bash
# End to end, inside the sandbox: the bundled box served from a static web
# server on 127.0.0.1 with a catalog made by `kvmdrive box index`; `up`
# resolves `box: acme/debian-12` + `box_version` through that catalog, adds
# the box to an empty cache by itself, and boots it.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
work=$(mktemp -d /tmp/kvmdrive-e2e.XXXXXX)
server=
trap 'cd /; "$KVMDRIVE" -C "$work/proj" destroy >/dev/null 2>&1; [ -n "$server" ] && kill "$server"; rm -rf "$work"' EXIT
mkdir -p "$work/www" "$work/proj"
ln "$box" "$work/www/debian-12-1.0.0.box" 2>/dev/null || cp "$box" "$work/www/debian-12-1.0.0.box"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >/dev/null 2>&1 &
server=$!
base="http://127.0.0.1:$port"
check "box index writes a catalog" "$KVMDRIVE" box index "$work/www" --base-url "$base/" --name acme/debian-12
for _ in $(seq 50); do curl -fs "$base/" >/dev/null && break; sleep 0.1; done

export KVMDRIVE_HOME="$work/home"   # an empty cache: up must download
cd "$work/proj"
cat > kvmdrive.yml <<YML
defaults:
  box: acme/debian-12
  box_url: $base/acme/debian-12.json
  box_version: "~> 1.0"
machines:
  - name: cat
YML
check "up adds the box through the catalog and boots it" "$KVMDRIVE" up
check "the box is in the cache as version 1.0.0" bash -c "'$KVMDRIVE' box list | grep -q 'acme/debian-12.*1.0.0'"
out=$("$KVMDRIVE" ssh cat -- hostname 2>&1)
check "ssh works ($out)" test "$out" = cat
check "destroy" "$KVMDRIVE" destroy
finish
