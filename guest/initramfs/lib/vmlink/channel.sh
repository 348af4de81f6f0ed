# Shell helpers for scripts that use the channel interface vml0 (sourced:
# `. /lib/vmlink/channel.sh`). No sleeps: guest time is slow in emulators.

carrier() { cat /sys/class/net/vml0/carrier 2>/dev/null; }

# Spins until vml0's carrier is $1 (0 or 1); says so and fails if it never is.
wait_carrier() {
    i=0
    until [ "$(carrier)" = "$1" ]; do
        i=$((i + 1))
        if [ $i -gt 3000000 ]; then
            echo "chan: ERROR: carrier never became $1"
            return 1
        fi
    done
    return 0
}

# The other VM's channel address (vm0 10.0.0.1, vm1 10.0.0.2).
if grep -q 'vmlink.name=vm1' /proc/cmdline; then
    peer=10.0.0.1
else
    peer=10.0.0.2
fi
