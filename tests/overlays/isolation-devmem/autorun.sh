#!/bin/sh
# vm1 reads guest-physical memory beyond its 256 MiB through /dev/mem; EPT
# has nothing mapped there, so vmlink must stop vm1 alone. vm0 does its
# ordinary work meanwhile and must finish.
if grep -q 'vmlink.name=vm1' /proc/cmdline; then
    # read() of /dev/mem stops at the end of RAM; mmap does not.
    echo "attack: reading /dev/mem at 512 MiB"
    devmem 0x20000000 32
    echo "attack: STILL RUNNING after the read"
else
    i=0
    while [ $i -lt 20000 ]; do i=$((i + 1)); done
    echo "work: vm0 finished its work"
fi
