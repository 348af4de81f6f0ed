#!/bin/sh
# The channel end to end, both guests at once (vm0 10.0.0.1, vm1 10.0.0.2):
# ping both ways; 64 MiB over TCP each way, checked on the receiver against
# the same deterministic stream (vmlink-guest gen/check, with a checksum); UDP datagrams filling MTU 1500 and
# MTU 65535; ethtool counters in zerocopy mode; then vm1 reloads its driver
# in copy mode while vm0 keeps pinging: vm0 sees the link go down and up,
# traffic flows again, and vm1's counters show only copied receives.
# No sleeps (guest time is slow under Bochs): the guests pace each other
# through the network.
BIG=67108864 # 64 MiB
SMALL=1048576
. /lib/vmlink/channel.sh
up() { cut -d' ' -f1 /proc/uptime; }
stats() { ethtool -S vml0 | grep -E 'rx_zerocopy|rx_copied|lazy|drops|fault_[a-z_]*: [1-9]|doorbells|interrupts|packets|ack_batches' | sed "s/^/$1: /"; }
send() { # peer port bytes seed
    until vmlink-guest gen "$3" "$4" | nc "$1" "$2" >/dev/null; do :; done
}
# Receives one connection on port $1, checks it against the stream
# (bytes $2, seed $3) and prints the verdict with $4.
receive() {
    nc -l -p "$1" -e sh -c "vmlink-guest check $2 $3 >/tmp/rx.$1"
    echo "check: tcp $4: $(cat /tmp/rx.$1) (t=$(up))"
}

wait_carrier 1 || exit 1
echo "chan: link up, $(ip -o -4 addr show vml0 | awk '{print $4}')"
until ping -c 1 -W 2 $peer >/dev/null; do :; done
ping -c 10 -i 0.05 $peer | tail -2

if [ $peer = 10.0.0.1 ]; then
    # vm1: receivers first, so that vm0 finds them bound.
    vmlink-guest udp-recv 6000 1472 20 >/tmp/u1 &
    u1=$!
    vmlink-guest udp-recv 6001 65507 2 >/tmp/u2 &
    u2=$!
    echo "chan: tcp start (t=$(up))"
    receive 5000 $BIG 1 "vm0->vm1"
    send $peer 5001 $BIG 2
    wait $u1 $u2
    cat /tmp/u1 /tmp/u2
    stats zc
    ip link set vml0 down
    until rmmod vmlink_net; do :; done
    insmod /lib/modules/vmlink_net.ko rx_mode=copy
    ip addr add 10.0.0.2/24 dev vml0
    ip link set vml0 up
    echo "chan: driver reloaded with rx_mode=copy"
    wait_carrier 1
    receive 5002 $SMALL 3 "after reload vm0->vm1"
    ping -c 5 -i 0.05 $peer | tail -2
    stats copy
else
    receive 5001 $BIG 2 "vm1->vm0" &
    l=$!
    send $peer 5000 $BIG 1
    wait $l
    vmlink-guest udp-send $peer:6000 1472 20
    ip link set vml0 mtu 65535
    vmlink-guest udp-send $peer:6001 65507 2
    stats zc
    # Keep sending while vm1 reloads its driver.
    ping -i 0.05 $peer >/dev/null 2>&1 &
    p=$!
    wait_carrier 0 && echo "chan: link down seen (peer driver unloaded)"
    wait_carrier 1 && echo "chan: link up again"
    kill $p
    send $peer 5002 $SMALL 3
    ping -c 5 -i 0.05 $peer | tail -2
fi
