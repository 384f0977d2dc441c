#!/bin/sh
# An extension with resourceLimits.cpuQuotaPercentage=20 in its manifest: its enable spins for
# two seconds of wall time, then records the CPU quota and throttling of the cgroup it ran in
# (v2: cpu.max and cpu.stat; v1: the cpu controller's cpu.cfs_quota_us and cpu.stat), read
# from where it runs, for the test to check.
set -eu
. "$(dirname "$0")/common.sh"
record
if [ "$op" = enable ]; then
    end=$(($(date +%s) + 3))
    while [ "$(date +%s)" -lt "$end" ]; do :; done
    cat /proc/self/cgroup > "$log_dir/cgroup"
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        dir="/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)"
        cat "$dir/cpu.max" > "$log_dir/cpu_quota"
    else
        dir="/sys/fs/cgroup/cpu$(sed -n 's/^[0-9]*:\([^:]*,\)\{0,1\}cpu\(,[^:]*\)\{0,1\}:\(.*\)$/\3/p' /proc/self/cgroup)"
        echo "$(cat "$dir/cpu.cfs_quota_us") $(cat "$dir/cpu.cfs_period_us")" > "$log_dir/cpu_quota"
    fi
    cat "$dir/cpu.stat" > "$log_dir/cpu_stat"
    write_status success "limited enabled seq $seq"
fi
exit 0
