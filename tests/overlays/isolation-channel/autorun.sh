#!/bin/sh
# The channel region through /dev/mem, at guest-physical 64 GiB (64 MiB
# region: section 0 at +0x1000, section 1 at +0x2000000). vm1 may read the
# header and both sections and write its own section; writing into vm0's
# section must stop vm1 alone. vm0 keeps working and finishes.
base=0x1000000000
if grep -q 'vmlink.name=vm1' /proc/cmdline; then
    echo "probe: header magic $(devmem $base 32)"
    echo "probe: header side $(devmem $((base + 12)) 32)"
    echo "probe: peer section reads $(devmem $((base + 0x1000)) 32)"
    devmem $((base + 0x3FFE000)) 32 0x5a5a5a5a
    echo "probe: own section keeps $(devmem $((base + 0x3FFE000)) 32)"
    echo "attack: writing into vm0's section"
    devmem $((base + 0x1010)) 32 0xdeadbeef
    echo "attack: STILL RUNNING after the write"
else
    i=0
    while [ $i -lt 20000 ]; do i=$((i + 1)); done
    echo "work: vm0 finished its work"
fi
