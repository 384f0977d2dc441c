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
    # protectedSettings decrypted exactly as real extensions do (HandlerUtil.py): the
    # certificate and key the agent wrote under /var/lib/waagent, named by the thumbprint.
    tp="$(sed -n 's/.*"protectedSettingsCertThumbprint" *: *"\([^"]*\)".*/\1/p' "$config_dir/$name.settings")"
    if [ -n "$tp" ]; then
        sed -n 's/.*"protectedSettings" *: *"\([^"]*\)".*/\1/p' "$config_dir/$name.settings" \
            | base64 -d | openssl cms -decrypt -inform DER -recip "/var/lib/waagent/$tp.crt" \
                -inkey "/var/lib/waagent/$tp.prv" > "$log_dir/protected.$name" 2>&1 || true
    fi
    write_status success "good enabled seq $seq${ext:+ ext $ext}"
fi
exit 0
