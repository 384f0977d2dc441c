"""Every key of /etc/waagent.conf that guestagent knows: name, kind, code default, doc.

This table is the single declaration of a key. The parser, `--check-config`,
`waagent -show-configuration` and the shipped etc/waagent.conf are all derived from it,
so a key added here is documented, validated and shipped at once.

Defaults are waagent 2.15's *code* defaults (reference/protocol.md §10), not the values its
shipped config file sets, so an image whose file lacks a key behaves as it did under waagent.
"""

from typing import NamedTuple, Optional, Tuple, Union

Value = Union[bool, int, float, str, None]

SWITCH = "switch"    # y / n, case-insensitive
INT = "int"
FLOAT = "float"      # seconds; our own period keys accept fractions so tests run in milliseconds
STRING = "string"    # free text; the literal None means unset


# A NamedTuple, as every record the root supervisor imports: dataclasses imports inspect
# (~1 MiB resident in the supervisor for the life of the VM, issue 17).
class Key(NamedTuple):
    name: str
    kind: str
    default: Value
    doc: str
    choices: Tuple[str, ...] = ()
    minimum: Optional[float] = None
    # Ours (not waagent's): shipped commented out in a section of their own.
    ours: bool = False
    # Parsed but not acted on yet: why, and where it will be. A file that sets such a key gets
    # one `event=config_not_applied` line at start and a warning from --check-config.
    not_applied: str = ""
    # The value an out-of-choice setting means, when it is not the default (waagent reads
    # any Provisioning.Agent it does not know as "do not provision", protocol.md §3.1).
    otherwise: Optional[str] = None


def _k(name, kind, default, doc, choices=(), minimum=None, ours=False, otherwise=None):
    return Key(name, kind, default, doc, tuple(choices), minimum, ours, otherwise=otherwise)


KEYS = (
    # --- Extensions -------------------------------------------------------------------------
    _k("Extensions.Enabled", SWITCH, True, "Enable extension handling."),
    _k("Extensions.GoalStatePeriod", FLOAT, 6, "Seconds between goal-state polls.",
       minimum=0.05),
    _k("Extensions.InitialGoalStatePeriod", INT, None,
       "Seconds between the first goal-state polls; defaults to Extensions.GoalStatePeriod.",
       minimum=1),
    _k("Extensions.WaitForCloudInit", SWITCH, False,
       "Wait for cloud-init to finish before processing extensions."),
    _k("Extensions.WaitForCloudInitTimeout", INT, 3600,
       "Seconds to wait for cloud-init (waagent reads this as a switch and ignores numbers; "
       "guestagent honours the number).", minimum=0),
    # --- Provisioning -----------------------------------------------------------------------
    _k("Provisioning.Enabled", SWITCH, True,
       "Provision the VM at all. n is the same as Provisioning.Agent=disabled (older images set it)."),
    _k("Provisioning.Agent", STRING, "auto", "Which agent provisions the VM; any other value "
       "means disabled, as in waagent.",
       choices=("auto", "waagent", "cloud-init", "disabled"), otherwise="disabled"),
    _k("Provisioning.DeleteRootPassword", SWITCH, False,
       "Lock the root password during provisioning."),
    _k("Provisioning.RegenerateSshHostKeyPair", SWITCH, False,
       "Generate fresh SSH host keys during provisioning."),
    _k("Provisioning.SshHostKeyPairType", STRING, "rsa",
       "Host key type whose fingerprint is reported.",
       choices=("rsa", "dsa", "ecdsa", "ed25519", "auto")),
    _k("Provisioning.MonitorHostName", SWITCH, False,
       "Watch the hostname and republish it when it changes."),
    _k("Provisioning.MonitorHostNamePeriod", INT, 30, "Seconds between hostname checks.", minimum=1),
    _k("Provisioning.DecodeCustomData", SWITCH, False, "Base64-decode CustomData."),
    _k("Provisioning.ExecuteCustomData", SWITCH, False, "Execute CustomData after provisioning."),
    _k("Provisioning.AllowResetSysUser", SWITCH, False,
       "Allow the provisioned user to be an existing system account (uid below 1000)."),
    _k("Provisioning.PasswordCryptId", STRING, "6",
       "crypt(3) method for the password hash: 1 md5, 5 sha256, 6 sha512.",
       choices=("1", "5", "6")),
    _k("Provisioning.PasswordCryptSaltLength", INT, 10, "Length of the random salt.", minimum=1),
    # --- Resource disk ----------------------------------------------------------------------
    _k("ResourceDisk.Format", SWITCH, False,
       "Format and mount the resource disk. If n, it is not mounted."),
    _k("ResourceDisk.Filesystem", STRING, "ext3", "Filesystem for the resource disk."),
    _k("ResourceDisk.MountPoint", STRING, "/mnt/resource", "Mount point of the resource disk."),
    _k("ResourceDisk.MountOptions", STRING, None, "Comma-separated mount options."),
    _k("ResourceDisk.EnableSwap", SWITCH, False, "Create and use a swap file on the resource disk."),
    _k("ResourceDisk.SwapSizeMB", INT, 0, "Size of the swap file in MiB.", minimum=0),
    _k("ResourceDisk.EnableSwapEncryption", SWITCH, False,
       "Encrypt the swap (FreeBSD only in waagent; parsed and reported as unsupported)."),
    # --- Logs -------------------------------------------------------------------------------
    _k("Logs.Verbose", SWITCH, False, "Log at debug level."),
    _k("Logs.Console", SWITCH, True, "Also write log lines to the console (the supervisor's stderr)."),
    _k("Logs.Collect", SWITCH, True, "Collect logs periodically."),
    _k("Logs.CollectPeriod", INT, 3600, "Seconds between log collections.", minimum=1),
    # --- OS ---------------------------------------------------------------------------------
    _k("OS.EnableFIPS", SWITCH, False, "Run cryptography in FIPS mode (sets OPENSSL_FIPS=1)."),
    _k("OS.RootDeviceScsiTimeout", INT, None, "SCSI timeout in seconds for the root device."),
    _k("OS.RootDeviceScsiTimeoutPeriod", INT, 30, "Seconds between SCSI timeout checks.", minimum=1),
    _k("OS.OpensslPath", STRING, "/usr/bin/openssl",
       "Path of openssl, which makes the transport key pair (without it, Python's cryptography "
       "does)."),
    _k("OS.SshDir", STRING, "/etc/ssh", "Folder of sshd_config and the host keys."),
    _k("OS.SshClientAliveInterval", INT, 180, "ClientAliveInterval written to sshd_config.",
       minimum=0),
    _k("OS.HomeDir", STRING, "/home", "Parent of new users' home folders."),
    _k("OS.PasswordPath", STRING, "/etc/shadow", "The shadow password file."),
    _k("OS.SudoersDir", STRING, "/etc/sudoers.d", "Where the provisioned user's sudoers drop-in goes."),
    _k("OS.EnableFirewall", SWITCH, False,
       "Admit only root and the agent to the WireServer (firewall rules)."),
    _k("OS.EnableFirewallPeriod", INT, 300, "Seconds between firewall checks.", minimum=1),
    _k("OS.RemovePersistentNetRulesPeriod", INT, 30,
       "Seconds between checks for persistent net rules.", minimum=1),
    _k("OS.MonitorDhcpClientRestartPeriod", INT, 30,
       "Seconds between checks for a restarted DHCP client.", minimum=1),
    _k("OS.AllowHTTP", SWITCH, False, "Allow plain HTTP for storage downloads."),
    _k("OS.EnableRDMA", SWITCH, False, "RDMA set-up after provisioning (SharedConfig.xml's RDMA address: dat.conf, /dev/hvnd_rdma, the interface)."),
    _k("OS.UpdateRdmaDriver", SWITCH, False, "RDMA driver update (not supported)."),
    _k("OS.CheckRdmaDriver", SWITCH, False, "RDMA set-up, with the Network Direct driver loaded and its version checked before /dev/hvnd_rdma is written."),
    # --- Proxy, paths -----------------------------------------------------------------------
    _k("HttpProxy.Host", STRING, None, "Proxy host for storage traffic (never the WireServer)."),
    _k("HttpProxy.Port", INT, None, "Proxy port.", minimum=1),
    _k("Lib.Dir", STRING, "/var/lib/waagent", "The extension contract folder."),
    _k("DVD.MountPoint", STRING, "/mnt/cdrom/secure", "Where the provisioning DVD is mounted."),
    _k("Pid.File", STRING, "/var/run/waagent.pid", "The daemon's pid file."),
    _k("Extension.LogDir", STRING, "/var/log/azure", "Parent of each extension's log folder."),
    _k("DetectScvmmEnv", SWITCH, False, "Detect an SCVMM environment."),
    # --- Updates (parsed; self-update is out of scope) ---------------------------------------
    _k("AutoUpdate.Enabled", SWITCH, True, "Legacy auto-update switch (self-update is not done)."),
    _k("AutoUpdate.UpdateToLatestVersion", SWITCH, None,
       "Auto-update to the latest version; defaults to AutoUpdate.Enabled (not done)."),
    _k("AutoUpdate.GAFamily", STRING, "Prod", "Agent family in the goal state."),
    _k("Autoupdate.Frequency", INT, 3600, "Seconds between update checks (not done).", minimum=1),
    _k("EnableOverProvisioning", SWITCH, True,
       "Hold extension handling while the artifacts profile says onHold."),
    # --- Protocol ---------------------------------------------------------------------------
    _k("Protocol.EndpointDiscovery", STRING, "dhcp",
       "dhcp: find the WireServer from DHCP option 245; anything else: the well-known address."),
    _k("Policy.PolicyFilePath", STRING, "/etc/waagent_policy.json", "Extension policy file."),
    _k("CGroups.Enabled", SWITCH, True, "Use cgroups for resource limits."),
    _k("Monitor.NetworkConfigurationChanges", SWITCH, False, "Watch network configuration."),
    # --- Debug (waagent's) ------------------------------------------------------------------
    _k("Debug.CgroupLogMetrics", SWITCH, False, "Log cgroup metrics."),
    _k("Debug.CgroupDisableOnProcessCheckFailure", SWITCH, True, ""),
    _k("Debug.CgroupDisableOnQuotaCheckFailure", SWITCH, True, ""),
    _k("Debug.CgroupCheckPeriod", INT, 300, "", minimum=1),
    _k("Debug.AgentCpuQuota", INT, 50, "CPU quota of the agent, percent of one CPU.", minimum=1),
    _k("Debug.AgentCpuThrottledTimeThreshold", INT, 120, "", minimum=0),
    _k("Debug.AgentMemoryQuota", INT, 31457280, "Memory quota of the agent in bytes.", minimum=0),
    _k("Debug.EnableAgentMemoryUsageCheck", SWITCH, False, ""),
    _k("Debug.EnableFastTrack", SWITCH, True, "Use vmSettings from the HostGAPlugin."),
    _k("Debug.EnableGAVersioning", SWITCH, True, ""),
    _k("Debug.EnableCgroupV2ResourceLimiting", SWITCH, True, ""),
    _k("Debug.EnableExtensionPolicy", SWITCH, False, ""),
    _k("Debug.EnableSignatureValidation", SWITCH, False, ""),
    _k("Debug.EnableRsmDowngrade", SWITCH, False, ""),
    _k("Debug.EtpCollectionPeriod", INT, 300, "", minimum=1),
    _k("Debug.SelfUpdateHotfixFrequency", INT, 14400, "", minimum=1),
    _k("Debug.SelfUpdateRegularFrequency", INT, 86400, "", minimum=1),
    _k("Debug.FirewallRulesLogPeriod", INT, 86400, "", minimum=1),
    _k("Debug.LogCollectorInitialDelay", INT, 300, "Seconds before the first log collection.",
       minimum=0),

    # === guestagent's own keys: relocate an instance, point it at an emulator, and set the
    # periods, retries and timeouts waagent hard-codes (so tests run the real paths quickly).
    _k("Logs.ConsoleDevice", STRING, "/dev/console",
       "With Logs.Console=y, the log is also echoed here until provisioning has ended.",
       ours=True),
    _k("Agent.RuntimeDir", STRING, "/run/guestagent", "Control socket folder.", ours=True),
    _k("Agent.StateDir", STRING, "/var/lib/guestagent", "Each worker's own state.", ours=True),
    _k("Agent.LogDir", STRING, "/var/log/guestagent", "One log file per worker.", ours=True),
    _k("Agent.LogMaxBytes", INT, 10 * 1024 * 1024, "Rotate a worker log at this size.",
       minimum=4096, ours=True),
    _k("Agent.LogBackups", INT, 5, "Rotated worker logs kept.", minimum=0, ours=True),
    # Supervision timings (issue 3): the worker table's defaults, applied to every worker.
    # 30 s x 2: hung after 60 s, as before at 5 s x 6 and 15 s x 4; each beat wakes the worker's
    # heartbeat thread and the supervisor (issue 13: most of an idle tree's wake-ups at 5 s;
    # issue 17: an idle wake-up costs a process about the same whatever it does, ~0.3-0.5 ms
    # on the host, and a worker that calls the broker every poll sends no beat besides).
    _k("Agent.HeartbeatInterval", FLOAT, 30.0,
       "Seconds between a worker's heartbeats.", minimum=0.05, ours=True),
    _k("Agent.HeartbeatMisses", INT, 2,
       "Heartbeats missed in a row before a worker is called hung, killed and restarted.",
       minimum=2, ours=True),
    _k("Agent.ReadyTimeout", FLOAT, 60.0,
       "Seconds a starting worker has to say worker.ready before it is killed.", minimum=0.1,
       ours=True),
    _k("Agent.BackoffDelay", FLOAT, 1.0,
       "Delay before the second restart in a flapping window; doubles for each further one.",
       minimum=0, ours=True),
    _k("Agent.BackoffMaxDelay", FLOAT, 60.0, "Longest delay before a restart.", minimum=0,
       ours=True),
    _k("Agent.FlapWindow", FLOAT, 300.0,
       "Seconds over which a worker's failures are counted.", minimum=0.1, ours=True),
    _k("Agent.FlapMaxFailures", INT, 5,
       "Failures within Agent.FlapWindow that make a worker FATAL (agentctl start revives it).",
       minimum=1, ours=True),
    _k("Agent.FatalRetryPeriod", FLOAT, 3600.0,
       "Seconds after which a FATAL worker is tried again (0: never; it waits for agentctl).",
       minimum=0, ours=True),
    _k("Agent.StopTimeout", FLOAT, 10.0,
       "Seconds a worker has to exit after SIGTERM before SIGKILL.", minimum=0.1, ours=True),
    _k("Agent.MemoryCheckPeriod", FLOAT, 30.0,
       "Seconds between the supervisor's memory checks of its workers.", minimum=0.1, ours=True),
    _k("Agent.MemorySoftLimit", INT, 0,
       "Resident bytes above which a worker is restarted (0: each worker's own limit).",
       minimum=0, ours=True),
    # 30 s: under emulation provisioning takes 12-20 s, and residents started at 5 s took the
    # two vCPUs from the SSH host keys Ready waits for (issue 17); a stuck provisioning still
    # holds them back only this long.
    _k("Agent.StartAfterProvisioning", FLOAT, 30.0,
       "The resident workers start when provisioning has ended, or this many seconds after "
       "it started at the latest (0: all at once).", minimum=0, ours=True),
    _k("Agent.Spawner", STRING, "zygote",
       "How workers start: zygote (forked from a preloaded spawner started before any data "
       "is handled; shares pages) or exec (fork+exec of a fresh interpreter each time). "
       "Read at start only.", choices=("zygote", "exec"), ours=True),
    _k("Agent.SpawnerRetireAfter", FLOAT, 30.0,
       "Seconds the zygote spawner stays when it has had nothing to start and no worker waits "
       "to start; then it leaves and later starts are fork+exec (0: it stays for good).",
       ours=True),
    _k("Agent.TestHooks", SWITCH, False,
       "TESTING ONLY, never in production: grants workers the debug.* verbs and forwards "
       "GUESTAGENT_TEST_DIR to them so they misbehave on demand.", ours=True),
    _k("Protocol.Endpoint", STRING, None,
       "WireServer address (host or host:port); skips discovery. For tests and emulators.",
       ours=True),
    _k("Protocol.HostPluginPort", INT, 32526, "HostGAPlugin port.", minimum=1, ours=True),
    _k("Protocol.ImdsEndpoint", STRING, "169.254.169.254", "IMDS address (host or host:port).",
       ours=True),
    _k("Protocol.HealthServicePeriod", FLOAT, 60.0, "Seconds between HealthService heartbeats "
       "(HostGAPlugin and IMDS health; waagent: 1 min).", minimum=0.05, ours=True),
    _k("Protocol.DetectionAttempts", INT, 360, "Endpoint detection attempts.", minimum=1, ours=True),
    _k("Protocol.DetectionInterval", FLOAT, 10.0, "Seconds between detection attempts.",
       minimum=0, ours=True),
    _k("Protocol.HttpTimeout", FLOAT, 10.0, "Socket timeout of one request, seconds.",
       minimum=0.01, ours=True),
    _k("Protocol.HttpAttempts", INT, 6, "Attempts of one request.", minimum=1, ours=True),
    _k("Protocol.RetryDelay", FLOAT, 1.0,
       "Base of the Fibonacci backoff between attempts, seconds.", minimum=0, ours=True),
    _k("Protocol.ThrottleDelay", FLOAT, 1.0, "Wait after 403/429/503, seconds.", minimum=0,
       ours=True),
    _k("Protocol.ThrottledAttempts", INT, 25, "Attempts once throttled.", minimum=1, ours=True),
    _k("Protocol.HealthReportAttempts", INT, 30, "Attempts of a health report.", minimum=1,
       ours=True),
    _k("Protocol.HealthReportRetryDelay", FLOAT, 15.0, "Backoff base of health reports, seconds.",
       minimum=0, ours=True),
    _k("Protocol.GoalStateRetries", INT, 6, "Refetches of a goal state without a RoleInstance.",
       minimum=1, ours=True),
    _k("Protocol.GoalStateRetryDelay", FLOAT, 0.5, "Seconds between those refetches.", minimum=0,
       ours=True),
    _k("Protocol.DownloadTimeout", FLOAT, 300.0, "Budget of one manifest or package download.",
       minimum=0.1, ours=True),
    _k("Protocol.MaxResponseBytes", INT, 16 * 1024 * 1024,
       "Largest protocol document read (packages have their own cap).", minimum=1024, ours=True),
    _k("DVD.Device", STRING, None, "Provisioning DVD device; found by discovery when unset.",
       ours=True),
    # Provisioning (issue 7).
    _k("DVD.MountRetryDelay", FLOAT, 5.0, "Seconds between the 5 attempts to mount the DVD.",
       minimum=0, ours=True),
    _k("Provisioning.UserGroups", STRING, None,
       "Comma-separated existing groups the provisioned user joins (e.g. adm,sudo).", ours=True),
    _k("Provisioning.CloudInitTimeout", FLOAT, 1800.0,
       "Seconds to wait for cloud-init's ovf-env.xml and SSH host key (Provisioning.Agent "
       "cloud-init).", minimum=0, ours=True),
    _k("Provisioning.CustomDataTimeout", FLOAT, 900.0,
       "Seconds CustomData may run (Provisioning.ExecuteCustomData) before it and its "
       "children are killed.", minimum=1, ours=True),
    _k("ResourceDisk.Device", STRING, None,
       "Resource disk device; found by discovery (vmbus) when unset.", ours=True),
    # Extensions (issue 13): waagent's hard-coded timeouts and guestagent's package caps.
    _k("Extensions.InstallTimeout", FLOAT, 900.0, "Seconds an extension's install may run.",
       minimum=0.1, ours=True),
    _k("Extensions.EnableTimeout", FLOAT, 300.0, "Seconds an extension's enable may run.",
       minimum=0.1, ours=True),
    _k("Extensions.DisableTimeout", FLOAT, 900.0, "Seconds an extension's disable may run.",
       minimum=0.1, ours=True),
    _k("Extensions.UpdateTimeout", FLOAT, 900.0, "Seconds an extension's update may run.",
       minimum=0.1, ours=True),
    _k("Extensions.UninstallTimeout", FLOAT, 300.0, "Seconds an extension's uninstall may run.",
       minimum=0.1, ours=True),
    _k("Extensions.MaxPackageBytes", INT, 256 * 1024 * 1024,
       "Largest extension package (zip) downloaded.", minimum=1024, ours=True),
    _k("Extensions.MaxExtractedBytes", INT, 1024 * 1024 * 1024,
       "Largest total size an extension package may expand to.", minimum=1024, ours=True),
    _k("Extensions.MaxPackageEntries", INT, 20000, "Most entries in an extension package.",
       minimum=1, ours=True),
    _k("Extensions.MaxCompressionRatio", INT, 200,
       "Largest compression ratio of an entry above 1 MiB (zip bombs).", minimum=2, ours=True),
    _k("Extensions.DependencyTimeout", FLOAT, 5400.0,
       "Seconds a goal state waits for the extensions later levels depend on (dependencyLevel).",
       minimum=0, ours=True),
    _k("Extensions.GoalStateHistoryCount", INT, 50, "Goal states kept in the history.",
       minimum=1, ours=True),
    _k("Extensions.GoalStateHistoryBytes", INT, 16 * 1024 * 1024,
       "Bytes the goal-state history may take.", minimum=1024, ours=True),
    _k("OS.SysRoot", STRING, "/", "Read /sys and /proc under this root (fixture trees in tests).",
       ours=True),
    _k("Logs.CollectRoot", STRING, "/",
       "The log collector reads the system paths of its manifest (/etc, /var/log, "
       "/var/log/azure) under this root (fixture trees in tests).", ours=True),
    _k("Logs.CollectorMemoryLimit", INT, 256 * 1024 * 1024,
       "Memory limit in bytes of the collector (MemoryMax of its scope in "
       "guestagent-logcollector.slice, or of the cgroup the supervisor makes without "
       "systemd); the collector stops cleanly before it.",
       minimum=4 * 1024 * 1024, ours=True),
    _k("Logs.CollectorAnonLimit", INT, 25 * 1024 * 1024,
       "The collector's own budget of anonymous memory in bytes: above it, it ends the "
       "bundle early, marked partial.", minimum=1024 * 1024, ours=True),
    _k("Logs.CollectorCpuQuota", INT, 5, "CPU quota of the log collector, percent of one CPU.",
       minimum=1, ours=True),
)

_RDMA = ("the Network Direct driver is not installed or updated from the distribution's "
         "packages (waagent's per-distribution RDMA handlers), and unlike waagent this key alone "
         "does not turn the RDMA set-up on: set OS.EnableRDMA=y")
_SELF_UPDATE = "guestagent does not update itself"
_LIMITS = ("guestagent's limits are its systemd slices', not cgroups it manages "
           "(issue 17: Footprint)")

#: Every key that is parsed but not acted on (grep the code: none of them is read), and why.
NOT_APPLIED = {
    "OS.UpdateRdmaDriver": _RDMA,
    "Monitor.NetworkConfigurationChanges": "network configuration changes are not watched "
    "(waagent's own default is off): the WireServer route and the hostname are re-checked on "
    "their periods instead",
    "OS.AllowHTTP": "waagent's fallback to plain http when Python has no ssl module; "
    "guestagent's Python always has it (requests needs it), and the platform's own http "
    "endpoints and the URLs the goal state names are used as given",
    "AutoUpdate.GAFamily": _SELF_UPDATE,
    "Debug.EnableSignatureValidation": "extension package signatures (encodedSignature, "
    "HandlerManifest signingInfo) are not validated (waagent only reports the result); an "
    "extension policy that requires a signature blocks the extension instead",
    "OS.EnableFIPS": "FIPS mode is not set up (no open issue yet)",
    "OS.PasswordPath": "passwords are set with chpasswd, which writes the system's shadow file",
    "AutoUpdate.Enabled": _SELF_UPDATE, "AutoUpdate.UpdateToLatestVersion": _SELF_UPDATE,
    "Autoupdate.Frequency": _SELF_UPDATE, "Debug.SelfUpdateHotfixFrequency": _SELF_UPDATE,
    "Debug.SelfUpdateRegularFrequency": _SELF_UPDATE, "Debug.EnableGAVersioning": _SELF_UPDATE,
    "Debug.EnableRsmDowngrade": _SELF_UPDATE,
    "CGroups.Enabled": _LIMITS, "Debug.CgroupLogMetrics": _LIMITS,
    "Debug.CgroupDisableOnProcessCheckFailure": _LIMITS,
    "Debug.CgroupDisableOnQuotaCheckFailure": _LIMITS, "Debug.CgroupCheckPeriod": _LIMITS,
    "Debug.AgentCpuQuota": _LIMITS, "Debug.AgentCpuThrottledTimeThreshold": _LIMITS,
    "Debug.AgentMemoryQuota": _LIMITS, "Debug.EnableAgentMemoryUsageCheck": _LIMITS,
    "Debug.EnableCgroupV2ResourceLimiting": _LIMITS,
}
KEYS = tuple(k._replace(not_applied=NOT_APPLIED.get(k.name, "")) for k in KEYS)

BY_NAME = {k.name: k for k in KEYS}
assert set(NOT_APPLIED) <= set(BY_NAME), set(NOT_APPLIED) - set(BY_NAME)
