#!/bin/sh
# A well-behaved extension: records each command, keeps its settings, reports success.
set -eu
. "$(dirname "$0")/common.sh"
record
save_env
if [ "$op" = enable ]; then
    cp "$config_dir/$seq.settings" "$log_dir/settings.$seq"
    ls -ln "$config_dir/$seq.settings" > "$log_dir/settings.$seq.ls"
    cat /proc/self/cgroup > "$log_dir/cgroup"
    write_status success "good enabled seq $seq"
fi
exit 0
