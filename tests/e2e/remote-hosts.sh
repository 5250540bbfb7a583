#!/usr/bin/env bash
# Two machines over two hypervisor hosts: the CI-sized run of
# tests/e2e/long/remote-hosts.sh (one machine a host, same checks).
REMOTE_HOSTS_MACHINES=2 exec "$(dirname "$0")/long/remote-hosts.sh" "$@"
