#!/bin/sh
# Traffic over a channel of another size: ping both ways, then 4 MiB over
# TCP from vm0 to vm1, checked on the receiver (vmlink-guest gen/check).
N=4194304 # 4 MiB
. /lib/vmlink/channel.sh
wait_carrier 1 || exit 1
ethtool -S vml0 >/dev/null
until ping -c 1 -W 2 $peer >/dev/null; do :; done
ping -c 5 -i 0.05 $peer | tail -2
if [ $peer = 10.0.0.1 ]; then
    nc -l -p 5000 -e sh -c "vmlink-guest check $N 1 >/tmp/rx.out"
    echo "check: tcp vm0->vm1: $(cat /tmp/rx.out)"
    ethtool -S vml0 | grep -E 'rx_zerocopy|rx_copied' | sed 's/^/stats: /'
    # The benchmark reads these counters with its own ioctl code: it must
    # see the names the ethtool program sees, in the same order.
    mine=$(vmlink-guest stats vml0 | cut -d: -f1 | tr '\n' ' ')
    theirs=$(ethtool -S vml0 | tail -n +2 | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')
    if [ -n "$mine" ] && [ "$mine" = "$theirs" ]; then
        echo "stats-ioctl: $(echo $mine | wc -w) names, as ethtool -S"
    else
        echo "stats-ioctl: DIFFER: [$mine] against [$theirs]"
    fi
else
    until vmlink-guest gen $N 1 | nc $peer 5000 >/dev/null; do :; done
fi
