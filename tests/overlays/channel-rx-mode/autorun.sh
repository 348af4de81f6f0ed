#!/bin/sh
# The receive mode switched while the link runs (the driver's rx-copy
# private flag): vm1 receives one checked flow copying, switched with the
# ethtool program, and one lending pages again, switched with
# vmlink-guest; each flow's counters show the mode it ran in.
N=4194304
. /lib/vmlink/channel.sh
wait_carrier 1 || exit 1
until ping -c 1 -W 2 $peer >/dev/null; do :; done
count() { ethtool -S vml0 | sed -n "s/^ *$1: //p"; }
if [ $peer = 10.0.0.1 ]; then
    ethtool --set-priv-flags vml0 rx-copy on
    echo "mode: $(ethtool --show-priv-flags vml0 | grep rx-copy | tr -s ' \t' ' ')"
    zc0=$(count rx_zerocopy) cp0=$(count rx_copied)
    nc -l -p 5000 -e sh -c "vmlink-guest check $N 1 >/tmp/rx.out"
    echo "check: copying: $(cat /tmp/rx.out)"
    zc1=$(count rx_zerocopy) cp1=$(count rx_copied)
    echo "counts: copying: rx_zerocopy +$((zc1 - zc0)) rx_copied +$((cp1 - cp0))"
    vmlink-guest rx-mode zerocopy
    nc -l -p 5001 -e sh -c "vmlink-guest check $N 2 >/tmp/rx.out"
    echo "check: lending: $(cat /tmp/rx.out)"
    zc2=$(count rx_zerocopy) cp2=$(count rx_copied)
    echo "counts: lending: rx_zerocopy +$((zc2 - zc1)) rx_copied +$((cp2 - cp1))"
else
    until vmlink-guest gen $N 1 | nc $peer 5000 >/dev/null; do :; done
    until vmlink-guest gen $N 2 | nc $peer 5001 >/dev/null; do :; done
    echo "chan: both flows sent"
fi
