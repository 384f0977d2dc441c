#!/bin/sh
# A well-behaved extension: records each command, keeps its settings, reports success.
set -eu
. "$(dirname "$0")/common.sh"
record
save_env
if [ "$op" = enable ]; then
    cp "$config_dir/$name.settings" "$log_dir/settings.$name"
    ls -ln "$config_dir/$name.settings" > "$log_dir/settings.$name.ls"
    cat /proc/self/cgroup > "$log_dir/cgroup"
    write_status success "good enabled seq $seq${ext:+ ext $ext}"
fi
exit 0
