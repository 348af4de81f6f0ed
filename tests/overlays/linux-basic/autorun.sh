#!/bin/sh
# Checks a guest makes of its platform under vmlink; the scenario asserts
# on these lines. No sleeps: guest time is emulated.
echo "check: uname $(uname -r)"
if grep -qw hypervisor /proc/cpuinfo; then
    echo "check: cpuinfo has the hypervisor flag"
else
    echo "check: cpuinfo LACKS the hypervisor flag"
fi
sig=$(dmesg | grep -o 'CPUID signature "[^"]*"')
echo "check: driver saw $sig"
a=$(cut -d' ' -f1 /proc/uptime)
i=0
while [ $i -lt 20000 ]; do i=$((i + 1)); done
b=$(cut -d' ' -f1 /proc/uptime)
if awk "BEGIN { exit !($b > $a) }"; then
    echo "check: uptime advanced from $a to $b"
else
    echo "check: uptime STUCK at $a"
fi
echo "check: memory $(grep MemTotal /proc/meminfo)"
echo "check: cpus $(grep -c ^processor /proc/cpuinfo) online $(cat /sys/devices/system/cpu/online)"
