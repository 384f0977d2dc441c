"""The provisioning verbs: each privileged effect of reference/protocol.md §3.4, one verb each.

This is each verb's wire contract, which the worker imports; its permit and handler are one
row beside the handler in supervisor/privileged/. Only the provisioning worker may call them,
and all but `provisioning.state` sit behind the `provisioning` gate, which
`provisioning.finish` closes for the boot and VM id (on the broker's disk; the broker also
closes it at start when the marker names this VM or the agent is disabled). The worker
parses the OVF and decides; the broker applies one bounded effect per verb, checking it
against its own state (the OVF it read itself, the VM id, the marker) and reading what the
config decides (paths, whether custom data may run) from waagent.conf itself, never from the
worker. Secrets (the password hash, a private key, custom data) travel only in arguments,
never in a result or a log line.
"""

from ipc.schema import EMPTY, HOSTNAME, USERNAME, Bool, Enum, Int, List, Nullable, Num, Obj, Str
from ipc.verbs import declare

GUID = Str(36, 36, r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# ovf-env.xml is capped at 256 KiB by the broker (workers/provisioning/ovf.py MAX_OVF_BYTES).
OVF_TEXT = Str(256 * 1024)
# An absolute path without `..`, NUL or newline; the broker also confines it to the user's home.
HOME_PATH = Str(1024, 2, r"/(?!.*(?:^|/)\.\.?(?:/|$))[^\x00\n]*[^/\x00\n]")
SSH_PUBLIC_KEY = Str(16 * 1024, 16,
                     r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)"
                     r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                     r" [A-Za-z0-9+/]+={0,3}(?: [^\x00\r\n]{0,1024})?")
PRIVATE_KEY_PEM = Str(32 * 1024, 64,
                      r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+"
                      r"-----END (?:RSA |EC |OPENSSH )?PRIVATE KEY-----\n?")
PASSWORD_HASH = Str(128, 30, r"\$(1|5|6)\$[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{22,86}")
PATH = Str(1024, 1)

STATE = declare(
    "provisioning.state",
    """What the worker needs to decide whether to provision: the `provisioned` marker of
    Lib.Dir (the VM id it was written for; null if absent), SMBIOS's product_uuid under
    OS.SysRoot (0400 root; null if unreadable), whether `disable_agent` exists, whether the
    provisioning gate is open (the broker closes it itself from the marker, the VM id and
    Provisioning.Agent, and keeps it closed on disk for the boot and VM id), and the verbs
    that ran already this boot and VM id (once per boot: custom data, forget_previous_vm).""",
    result=Obj({"marker": Nullable(Str(128)), "product_uuid": Nullable(Str(64)),
                "disable_agent": Bool(), "gate_open": Bool(),
                "done": List(Str(64), 16)}),
)

READ_OVF = declare(
    "provisioning.read_ovf",
    """Read ovf-env.xml. source=dvd: mount the provisioning media (DVD.Device, or the first
    sr*/cdrom*/... device) read-only in DVD.MountPoint (0700), read ovf-env.xml with a size
    cap, unmount, eject, and save a copy with the password replaced by `*` as
    Lib.Dir/ovf-env.xml. source=saved: read that saved copy (cloud-init writes it); ovf is null
    while there is none. FAILED when there is no media or no readable ovf-env.xml.""",
    args=Obj({"source": Enum("dvd", "saved")}),
    result=Obj({"ovf": Nullable(OVF_TEXT), "device": Nullable(PATH)}),
    timeout=120.0,
)

SET_HOSTNAME = declare(
    "provisioning.hostname",
    """Set the hostname: /etc/hostname and the running kernel's, and publish it by DHCP
    (`send host-name` in dhclient.conf, Lib.Dir/published_hostname).""",
    args=Obj({"hostname": HOSTNAME}),
    result=Obj({"published": Bool()}),
    timeout=30.0,
)

USER = declare(
    "provisioning.user",
    """Create the VM owner's account with a home (useradd -m) unless it exists, add it to the
    existing groups of Provisioning.UserGroups. Only the UserName of the ovf-env.xml the
    broker read itself (FAILED for any other, and when none was read); FAILED for root, the
    agent's own accounts and a system account (uid below UID_MIN of /etc/login.defs) unless
    Provisioning.AllowResetSysUser=y.""",
    args=Obj({"username": USERNAME}),
    result=Obj({"created": Bool(), "uid": Int(0, 2 ** 32), "home": PATH,
                "groups": List(Str(64), 64)}),
    timeout=60.0,
)

PASSWORD = declare(
    "provisioning.password",
    """Set the account's password from a crypt(3) hash made in the worker, given to
    `chpasswd -e` on its stdin (never argv). Same system-account rule as provisioning.user.""",
    args=Obj({"username": USERNAME, "hash": PASSWORD_HASH}),
    timeout=60.0,
)

SUDOERS = declare(
    "provisioning.sudoers",
    """Grant the account sudo in OS.SudoersDir/waagent (0440): `ALL=(ALL) ALL`, or with
    NOPASSWD when it has no password. Creates the folder and its #includedir if missing.""",
    args=Obj({"username": USERNAME, "nopasswd": Bool()}),
    result=Obj({"path": PATH}),
)

SSHD_CONFIG = declare(
    "provisioning.sshd_config",
    """Set PasswordAuthentication and ChallengeResponseAuthentication (no when password
    logins are disabled) and ClientAliveInterval (OS.SshClientAliveInterval) in
    OS.SshDir/sshd_config, outside Match blocks. changed=false when it was already so;
    path=null when there is no sshd_config (no sshd on this image).""",
    args=Obj({"disable_password_authentication": Bool()}),
    result=Obj({"changed": Bool(), "path": Nullable(PATH)}),
)

AUTHORIZED_KEY = declare(
    "provisioning.authorized_key",
    """Append one public key line to a file in the account's ~/.ssh (e.g.
    ~/.ssh/authorized_keys) unless it is there: the OVF's user only, the path exactly
    <home>/.ssh/<name>, the key one well-formed OpenSSH key line (known type, a blob of that
    type, a plain comment, no options); no symlink followed, nothing of root's chowned
    (FAILED), folders 0700 and the file 0600, all owned by the account.""",
    args=Obj({"username": USERNAME, "path": HOME_PATH, "key": SSH_PUBLIC_KEY}),
    result=Obj({"added": Bool()}),
)

KEY_PAIR = declare(
    "provisioning.key_pair",
    """Write a key pair in the account's ~/.ssh: the private key at path (0600) and the
    public key at path.pub (0644); the same rules as authorized_key.""",
    args=Obj({"username": USERNAME, "path": HOME_PATH, "private_key": PRIVATE_KEY_PEM,
              "public_key": SSH_PUBLIC_KEY}),
)

CUSTOM_DATA = declare(
    "provisioning.custom_data",
    """Save CustomData as Lib.Dir/CustomData: decoded from base64 when
    Provisioning.DecodeCustomData or ExecuteCustomData is y, and run as root when
    ExecuteCustomData is y (a reviewed exception, DESIGN.md principle 2: the broker runs only
    bytes it read itself from the DVD; the worker names which, and the broker checks they are
    the CustomData of the ovf-env.xml it read).""",
    args=Obj({"custom_data": OVF_TEXT}),
    result=Obj({"decoded": Bool(), "executed": Bool(), "exit_code": Nullable(Int(-255, 255)),
                "seconds": Num(0, 86400)}),
    timeout=960.0,
)

LOCK_ROOT = declare(
    "provisioning.lock_root_password",
    """Provisioning.DeleteRootPassword=y: lock root's password (`*LOCK*`). FAILED when the
    key is n.""",
    timeout=30.0,
)

HOST_KEYS = declare(
    "provisioning.host_keys",
    """Provisioning.RegenerateSshHostKeyPair=y: delete OS.SshDir/ssh_host_*key* and generate
    new keys (Provisioning.SshHostKeyPairType, or every default type for auto). Always
    returns the thumbprint of the chosen type's public key (ssh-keygen -lf, colons removed;
    null when there is none) and how long generation took.""",
    result=Obj({"regenerated": Bool(), "type": Str(16, 1), "thumbprint": Nullable(Str(128)),
                "seconds": Num(0, 86400)}),
    timeout=300.0,
)

RESTART_SSHD = declare(
    "provisioning.restart_sshd",
    """Restart (or reload) sshd the distro's way: systemctl try-reload-or-restart of ssh or
    sshd where systemd runs, the init script elsewhere; `how` says what was done.""",
    result=Obj({"how": Str(128)}),
    timeout=60.0,
)

FORGET_VM = declare(
    "provisioning.forget_previous_vm",
    """The VM id changed (a captured image): remove the previous VM's protocol state from
    Lib.Dir and each extension's status and settings (protocol.md §6.3). The broker compares
    the marker with the VM id itself: FAILED when the marker is absent or names this VM.
    Once per boot and VM id.""",
    result=Obj({"removed": Int(0, 2 ** 31)}),
    timeout=60.0,
)

FINISH = declare(
    "provisioning.finish",
    """Provisioning is over: write the `provisioned` marker (vm_id non-null: the VM id the
    broker reads itself from SMBIOS, which vm_id must equal, else FAILED; null writes none)
    and, when asked, `disable_agent`. Closes the provisioning gate for this boot and VM id,
    on disk: no restart of the worker or the supervisor reopens it.""",
    args=Obj({"vm_id": Nullable(GUID), "disable_agent": Bool()}),
)
