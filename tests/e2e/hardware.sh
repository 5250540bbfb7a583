#!/usr/bin/env bash
# End to end, machine hardware, inside the sandbox: ONE machine (512 MiB) with
# an FQDN host name, an extra disk, a TPM, q35 and the guest agent channel,
# booted from BIOS; its disk volume gone after destroy. Then, up together, a
# UEFI machine (OVMF, its own NVRAM, /sys/firmware/efi in the guest, NVRAM
# removed on destroy) and a machine whose NIC is an e1000 (SSH goes over it),
# and a foreign-architecture box refused with nothing created.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
ensure_sandbox "$@"

box=$(bundled_box) || { echo "cannot build the bundled box"; exit 1; }
proj=$(mktemp -d /tmp/kvmdrive-e2e-hw.XXXXXX)
trap 'cd /; for d in "$proj"/*/; do "$KVMDRIVE" -C "$d" destroy >/dev/null 2>&1; done; rm -rf "$proj"' EXIT

in_guest() { "$KVMDRIVE" -C "$proj/node" ssh node1 -- "$@" 2>&1; }

# ---- one machine with the hardware a guest can show -------------------------
mkdir -p "$proj/node" && cd "$proj/node"
cat > kvmdrive.yml <<YML
machines:
  - name: node1
    box: $box
    memory: 512
    hostname: node1.example.com
    disks: [{size: 2G, name: data}]
    machine_type: q35
    tpm: true
    guest_agent: true
YML
start=$(date +%s%N)
check "up with an extra disk, TPM, q35, guest agent" "$KVMDRIVE" up
echo "up took $(( ($(date +%s%N) - start) / 1000000 )) ms"
domain=$(virsh list --name | grep -- '-node1$')

out=$(in_guest lsblk -bdno SIZE /dev/vdb)
check "/dev/vdb in the guest is 2 GiB ($out)" test "$out" = 2147483648
out=$(in_guest hostname -f)
check "hostname -f gives the FQDN ($out)" test "$out" = node1.example.com
out=$(in_guest hostname)
check "hostname gives the short name ($out)" test "$out" = node1
# The box took its name at boot (the kvmdrive.hostname credential), so the
# first login did not need the `sudo` that would set it.
out=$(in_guest 'sudo journalctl -b -o cat -u kvmdrive-hostname.service')
check "the box named itself at boot (kvmdrive-hostname.service ran)" \
    grep -q "Finished kvmdrive-hostname.service" <<<"$out"
# Every sudo of this boot, this one included (so the journal was read).
out=$(in_guest 'sudo journalctl -b -o cat _COMM=sudo')
check "the first login ran no sudo to set the name" \
    bash -c 'grep -q "COMMAND=/usr/bin/journalctl" <<<"$1" \
        && ! grep -q "COMMAND=.* -c .*/proc/sys/kernel/hostname" <<<"$1"' _ "$out"
out=$(in_guest cat /sys/class/dmi/id/product_name)
check "the guest runs on q35 ($out)" grep -q Q35 <<<"$out"
xml=$(virsh dumpxml "$domain")
check "dumpxml has the TPM emulator and the agent channel" \
    bash -c "grep -q \"<tpm model='tpm-crb'>\" <<<\"\$1\" && grep -q org.qemu.guest_agent.0 <<<\"\$1\"" _ "$xml"
tpm=$(in_guest 'ls /dev/tpm0 /dev/tpmrm0 2>&1; lsmod | grep -i tpm; ls /lib/modules/$(uname -r)/kernel/drivers/char/tpm/ 2>&1 | head -5')
echo "guest TPM view: $tpm"
check "/dev/tpm0 exists in the guest" grep -qx /dev/tpm0 <<<"$tpm"
check "the BIOS machine has no /sys/firmware/efi" in_guest 'test ! -e /sys/firmware/efi'
check "the data volume is in the pool" bash -c "virsh vol-list kvmdrive | grep -q -- '$domain.disk-data.qcow2'"
check "destroy" "$KVMDRIVE" destroy
check "the data volume is gone from the pool" bash -c "! virsh vol-list kvmdrive | grep -q -- '$domain.disk-'"
check "no domain left" bash -c "! virsh list --all --name | grep -q -- '-node1$'"

# ---- UEFI and an e1000 NIC, the same box, up in parallel ---------------------
mkdir -p "$proj/efi" && cd "$proj/efi"
cat > kvmdrive.yml <<YML
machines:
  - name: efi
    box: $box
    memory: 512
    firmware: efi
    boot_timeout: 900   # OVMF under TCG on a host shared with other test runs
  - name: e1000
    box: $box
    memory: 512
    nic_model: e1000
YML
start=$(date +%s%N)
check "up: a UEFI machine and an e1000 machine" "$KVMDRIVE" up
echo "up took $(( ($(date +%s%N) - start) / 1000000 )) ms"
efi_domain=$(virsh list --name | grep -- '-efi$')
xml=$(virsh dumpxml "${efi_domain:-none}" 2>/dev/null)
nvram=/var/lib/libvirt/qemu/nvram/${efi_domain:-none}_VARS.fd
check "dumpxml shows the OVMF loader" grep -q "OVMF_CODE_4M.fd</loader>" <<<"$xml"
check "dumpxml shows its own NVRAM" grep -q "$nvram</nvram>" <<<"$xml"
check "the NVRAM file exists" test -s "$nvram"
out=$("$KVMDRIVE" ssh efi -- 'ls -d /sys/firmware/efi && cat /sys/firmware/efi/fw_platform_size' 2>&1)
check "the UEFI machine booted from UEFI ($(tr '\n' ' ' <<<"$out"))" grep -qx 64 <<<"$out"
e1000_domain=$(virsh list --name | grep -- '-e1000$')
check "dumpxml of the e1000 machine has the e1000 model" \
    bash -c "virsh dumpxml '${e1000_domain:-none}' | grep -q \"<model type='e1000'/>\""
# SSH reached the guest through that NIC (it is its only one); the driver says which.
out=$("$KVMDRIVE" ssh e1000 -- 'for n in /sys/class/net/e*; do basename "$(readlink -f "$n/device/driver")"; done' 2>&1)
check "SSH works over the e1000 NIC (guest driver: $(tr '\n' ' ' <<<"$out"))" grep -qx e1000 <<<"$out"
check "destroy removes both machines" "$KVMDRIVE" destroy
check "the NVRAM file is gone" test ! -e "$nvram"
check "no domain left" bash -c "! virsh list --all --name | grep -qE -- '-(efi|e1000)$'"

# ---- a box for another architecture is refused before anything is made ------
mkdir -p "$proj/arm/unpack" && cd "$proj/arm"
tar -xf "$box" -C unpack
echo '{"provider":"libvirt","format":"qcow2","virtual_size":10,"architecture":"arm64"}' > unpack/metadata.json
tar -cf foreign.box -C unpack . && rm -rf unpack
cat > kvmdrive.yml <<YML
machines:
  - name: arm
    box: foreign.box
YML
before_vols=$(virsh vol-list kvmdrive | wc -l)
before_nets=$(virsh net-list --all --name | grep -c .)
out=$(KVMDRIVE_HOME="$proj/arm/home" "$KVMDRIVE" up 2>&1); rc=$?
echo "$out" | tail -n 3
check "up refuses the arm64 box" test "$rc" -ne 0
check "the error names arm64 and the host's architecture" grep -q "is for arm64, but this host runs amd64" <<<"$out"
check "no domain was made" bash -c "! virsh list --all --name | grep -q -- '-arm$'"
check "no volume was made" test "$(virsh vol-list kvmdrive | wc -l)" = "$before_vols"
check "no network was made" test "$(virsh net-list --all --name | grep -c .)" = "$before_nets"
printf 'machines:\n  - name: arm\n    box: %s\n    box_architecture: aarch64\n' "$box" > kvmdrive.yml
out=$("$KVMDRIVE" up 2>&1); rc=$?
check "box_architecture: aarch64 is refused too ($(tail -n 1 <<<"$out"))" \
    bash -c "test $rc -ne 0 && grep -q 'is for arm64' <<<\"\$1\"" _ "$out"
check "still no domain" bash -c "! virsh list --all --name | grep -q -- '-arm$'"

finish
