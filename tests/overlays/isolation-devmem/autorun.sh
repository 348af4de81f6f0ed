#!/bin/sh
# vm1 first tries to reach the other CPU through its local APIC (INIT,
# SIPI, NMI and a broadcast IPI, written to the ICR through /dev/mem):
# vmlink must refuse each and say so. Then vm1 reads guest-physical memory
# beyond its 256 MiB through /dev/mem; EPT has nothing mapped there, so
# vmlink must stop vm1 alone. vm0 does its ordinary work meanwhile and must
# finish.
if grep -q 'vmlink.name=vm1' /proc/cmdline; then
    echo "attack: IPIs to the other CPU"
    devmem 0xFEE00310 32 0x01000000 # destination: APIC ID 1
    devmem 0xFEE00300 32 0x00004500 # INIT
    devmem 0xFEE00300 32 0x00004699 # SIPI, start at 0x99000
    devmem 0xFEE00300 32 0x000C4400 # NMI to all but self
    devmem 0xFEE00300 32 0x00084031 # fixed vector 0x31 to all
    echo "attack: still running after the IPIs"
    # read() of /dev/mem stops at the end of RAM; mmap does not.
    echo "attack: reading /dev/mem at 512 MiB"
    devmem 0x20000000 32
    echo "attack: STILL RUNNING after the read"
else
    i=0
    while [ $i -lt 20000 ]; do i=$((i + 1)); done
    echo "work: vm0 finished its work"
fi
