#!/bin/sh
# vm1 crashes its own kernel; with panic=-1 it then tries to reset the
# machine, which vmlink turns into stopping vm1 alone. vm0 must finish.
if grep -q 'vmlink.name=vm1' /proc/cmdline; then
    echo "attack: crashing the kernel via sysrq"
    echo c > /proc/sysrq-trigger
    echo "attack: STILL RUNNING after the crash"
else
    i=0
    while [ $i -lt 20000 ]; do i=$((i + 1)); done
    echo "work: vm0 finished its work"
fi
