#!/bin/sh
# A slow consumer must not starve the sender: on vm1 one TCP socket is
# never read (its process waits on /dev/null), and it holds zero-copy
# buffers of vm0's 64; meanwhile a second flow of 4 MiB must go through at
# full rate and arrive intact. vm1's driver copies out instead of holding
# more than half of the buffers (lazy_copies).
N=4194304
. /lib/vmlink/channel.sh
wait_carrier 1 || exit 1
until ping -c 1 -W 2 $peer >/dev/null; do :; done
if [ $peer = 10.0.0.1 ]; then
    # The unread socket: accepted, never read.
    nc -l -p 7000 -e tail -f /dev/null &
    nc -l -p 5000 -e sh -c "vmlink-guest check $N 1 >/tmp/rx.out"
    echo "check: tcp vm0->vm1 beside an unread socket: $(cat /tmp/rx.out)"
    ethtool -S vml0 | grep -E 'rx_zerocopy|lazy_copies|rx_copied' | sed 's/^/stats: /'
    # Let the stalled sender go: the socket closes, its buffers come back.
    kill %1 2>/dev/null
    pkill tail
else
    # Blocks once vm1's receive window for it is full: never finishes.
    until vmlink-guest gen 16777216 9 | nc $peer 7000 >/dev/null; do :; done &
    until vmlink-guest gen $N 1 | nc $peer 5000 >/dev/null; do :; done
    echo "chan: second flow sent"
fi
