#!/bin/sh
# `cargo xtask bench`: one path of the comparison per boot. xtask chooses
# the path through the partition configuration (region size, buffers) and
# the driver's parameters (vmlink_net.* on the kernel command line), and the
# workload through bench.* words:
#   sizes (comma-separated payload bytes), reps (round trips for each of
#   those sizes, in the same order),
#   bulk (bytes per bulk TCP transfer), bulk_reps,
#   mtu (vml0's MTU on both guests; default the driver's 1500),
#   ab (blocks per receive mode: the round trips run in both modes, on
#   both guests, alternating on one connection; path 4's boot measures
#   path 3's round trips so).
# vm1 serves; vm0 measures and prints the `bench:` lines xtask reads.
# No sleeps: guest time is slow under Bochs.
. /lib/vmlink/channel.sh
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^bench\.$1=//p"; }

wait_carrier 1 || exit 1
mtu=$(arg mtu)
if [ -n "$mtu" ] && ! ip link set vml0 mtu "$mtu"; then
    echo "bench: ERROR: vml0 refused MTU $mtu"
    exit 1
fi
if [ $peer = 10.0.0.1 ]; then
    exec vmlink-guest bench-serve
fi

# The server is up once its TCP echo answers.
until vmlink-guest bench-rr tcp $peer 64 1 >/dev/null 2>&1; do :; done
echo "bench: start path=$(arg path) mtu=$(cat /sys/class/net/vml0/mtu)"
vmlink-guest bench-copy 1500 200
ab=$(arg ab)
rr() {
    if [ -n "$ab" ]; then
        vmlink-guest bench-rr-ab $1 $peer $2 $3 $ab
    else
        vmlink-guest bench-rr $1 $peer $2 $3
    fi
}
set -- $(arg reps | tr , ' ')
for size in $(arg sizes | tr , ' '); do
    u=$size
    [ "$u" -gt 65507 ] && u=65507 # the largest UDP payload
    r=$1
    shift
    rr udp $u "$r"
    rr tcp $size "$r"
    # Receiving by mapping pages (TCP_ZEROCOPY_RECEIVE), alone and with
    # MSG_ZEROCOPY sends, needs a page of payload at least.
    if [ "$size" -ge 4096 ]; then
        rr tcp-mmap $size "$r"
        rr tcp-zc $size "$r"
    fi
done
# Each bulk repetition three times: the sender writing normally (two copies
# on its side), with MSG_ZEROCOPY (only the driver's copy into the channel),
# and with MSG_ZEROCOPY to a receiver that maps what it gets
# (TCP_ZEROCOPY_RECEIVE).
i=0
while [ $i -lt "$(arg bulk_reps)" ]; do
    i=$((i + 1))
    for send in copy zerocopy zerocopy-mmap; do
        vmlink-guest bench-bulk $peer "$(arg bulk)" $i $send
    done
done
vmlink-guest bench-stop $peer
echo "bench: end"
