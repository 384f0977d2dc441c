"""The goal state kept up to date as waagent keeps it (protocol.md §1.4, §1.6, §1.14): which of
ExtensionsConfig (Fabric) and vmSettings (FastTrack) is the extensions goal state, and when the
tenant certificates must be fetched again.

Each `update()`:
- fetches the WireServer goal state; a new incarnation (or a forced refresh) fetches the full
  goal state: HostingEnvironmentConfig, SharedConfig, ExtensionsConfig and the Certificates;
- asks the HostGAPlugin for vmSettings with the last ETag (unless Debug.EnableFastTrack=n, or
  the HostGAPlugin said it does not serve them: asked again after 6 hours); a vmSettings whose
  source is Fabric only mirrors ExtensionsConfig and is ignored;
- chooses the extensions goal state by created-on time: of the documents that changed, the
  newer (vmSettings only when strictly newer), and it replaces the current one only when it
  is newer still — never going back to an older goal state;
- for a FastTrack goal state, checks that every protectedSettings' certificate thumbprint is
  among the tenant certificates; when one is missing (after hibernate and resume the platform
  issues a new tenant certificate without a new incarnation) the whole goal state is fetched
  again at once, certificates included; if the certificate is still missing, the update raises
  GoalStateInconsistentError (the state is kept: the next update proceeds with it, as waagent).

`certificates_changed` says the set of tenant certificates (thumbprint, with or without key) is
not the one of the previous update: the extensions worker then hands them to the broker
(workers.platform.certificates.install_for_extensions).

Usage (the extensions worker's loop):

    tracker = GoalStateTracker(client, config)
    while running:
        update = tracker.update()            # raises PlatformError subclasses: keep going
        if update.certificates_changed:
            install_for_extensions(worker, update.certificates)
        if update.extensions_changed:
            process(update.extensions_goal_state)
"""

import logging
import time
from datetime import datetime, timezone
from typing import Callable, List, NamedTuple, Optional, Tuple

from workers.platform.certificate_records import CertificateRecord
from workers.platform.client import FullGoalState, PlatformClient
from workers.platform.errors import DocumentError, HttpError
from workers.platform.extensionsconfig import ExtensionsConfig
from workers.platform.goalstate import GoalState
from workers.platform.vmsettings import VmSettingsGoalState

log = logging.getLogger(__name__)

# waagent asks again for vmSettings this long after the HostGAPlugin answered 404.
VM_SETTINGS_RECHECK = 6 * 3600.0
_OLDEST = datetime.min.replace(tzinfo=timezone.utc)


class GoalStateInconsistentError(DocumentError):
    """A FastTrack goal state needs a certificate the goal state does not have, even after a
    forced refresh."""

    def __init__(self, reason: str):
        super().__init__("GoalState", reason)


def created_on(extensions: Optional[ExtensionsConfig]) -> datetime:
    """When the platform made this extensions goal state (the oldest time if it does not say)."""
    if extensions is None or extensions.metadata is None:
        return _OLDEST
    return extensions.metadata.created_on or _OLDEST


def is_fast_track(extensions: Optional[ExtensionsConfig]) -> bool:
    return isinstance(extensions, VmSettingsGoalState) and not extensions.is_fabric


def missing_certificates(extensions: Optional[ExtensionsConfig],
                         certificates: List[CertificateRecord]) -> List[Tuple[str, str]]:
    """(handler, thumbprint) of each protectedSettings whose certificate is not in the set."""
    have = {c.thumbprint.upper() for c in certificates}
    missing = []
    for handler in (extensions.handlers if extensions is not None else ()):
        for settings in handler.settings:
            if settings.protected_settings is None:
                continue
            tp = (settings.certificate_thumbprint or "").upper()
            if tp not in have:
                missing.append((handler.name, settings.certificate_thumbprint or "none"))
    return missing


class Update(NamedTuple):   # not a dataclass: see spawner/zygote.py PRELOAD
    goal_state: GoalState
    full: Optional[FullGoalState]                 # the last full WireServer goal state
    extensions_goal_state: Optional[ExtensionsConfig]
    certificates: Tuple[CertificateRecord, ...] = ()
    goal_state_changed: bool = False              # a new incarnation (or a forced refresh)
    vm_settings_changed: bool = False             # a new vmSettings ETag
    extensions_changed: bool = False              # the extensions goal state was replaced
    certificates_changed: bool = False            # the tenant certificate set changed

    @property
    def source(self) -> str:
        return "FastTrack" if is_fast_track(self.extensions_goal_state) else "Fabric"


class GoalStateTracker:
    def __init__(self, client: PlatformClient, config=None,
                 clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.fast_track = True if config is None else bool(config["Debug.EnableFastTrack"])
        self._clock = clock
        self.goal_state: Optional[GoalState] = None
        self.full: Optional[FullGoalState] = None
        self.vm_settings: Optional[VmSettingsGoalState] = None
        self.etag: Optional[str] = None
        self.extensions_goal_state: Optional[ExtensionsConfig] = None
        self.certificates: Tuple[CertificateRecord, ...] = ()
        self._certificate_summary: Optional[frozenset] = None
        self._vm_settings_unsupported_until: Optional[float] = None

    # -- fetching --------------------------------------------------------------------------

    def _fetch_vm_settings(self, force: bool) -> Optional[VmSettingsGoalState]:
        """A new (non-Fabric) vmSettings goal state, or None when unchanged or unavailable."""
        if not self.fast_track:
            return None
        until = self._vm_settings_unsupported_until
        if until is not None and self._clock() < until and not force:
            return None
        try:
            answer = self.client.vm_settings(None if force else self.etag)
        except HttpError as e:
            log.info("vmSettings unavailable (%s); using the WireServer goal state", e)
            return None
        if not answer.supported:
            if self._vm_settings_unsupported_until is None:
                log.info("the HostGAPlugin does not serve vmSettings; asking again in %d h",
                         VM_SETTINGS_RECHECK // 3600)
            self._vm_settings_unsupported_until = self._clock() + VM_SETTINGS_RECHECK
            return None
        self._vm_settings_unsupported_until = None
        if not answer.changed:
            return None
        self.etag = answer.etag
        typed = answer.extensions_goal_state
        if typed is not None and typed.is_fabric:
            log.info("vmSettings %s came through Fabric: ignored (ExtensionsConfig rules)",
                     answer.etag)
            return None
        return typed

    def update(self, force: bool = False) -> Update:
        """Bring the goal state up to date; see the module's documentation."""
        update = self._update(force)
        # Checked when something new came, as waagent does: an unchanged goal state that failed
        # the check once is used as it is.
        if (update.goal_state_changed or update.vm_settings_changed) and \
                is_fast_track(self.extensions_goal_state):
            missing = missing_certificates(self.extensions_goal_state, self.certificates)
            if missing:
                log.warning("certificate %s needed by %s is not in the goal state: refreshing "
                            "the whole goal state", missing[0][1], missing[0][0])
                retried = self._update(True)
                update = _merged(update, retried)
                missing = missing_certificates(self.extensions_goal_state, self.certificates)
                if missing:
                    raise GoalStateInconsistentError(
                        "certificate %s needed by %s is missing from the goal state"
                        % (missing[0][1], missing[0][0]))
        return update

    def _update(self, force: bool) -> Update:
        goal_state = self.client.goal_state()
        goal_state_changed = force or self.goal_state is None or \
            goal_state.incarnation != self.goal_state.incarnation
        vm_settings = self._fetch_vm_settings(force)
        full, certificates = self.full, self.certificates
        if goal_state_changed:
            full = self.client.full_goal_state(goal_state)
            certificates = tuple(self.client.certificates(goal_state)
                                 if goal_state.certificates_url else ())
        # Choose among what changed; replace the current one only with a newer one.
        candidate = None
        if goal_state_changed and vm_settings is not None:
            extensions_config = full.extensions_config if full is not None else None
            candidate = vm_settings if created_on(vm_settings) > created_on(extensions_config) \
                else extensions_config
        elif goal_state_changed:
            candidate = full.extensions_config if full is not None else None
        elif vm_settings is not None:
            candidate = vm_settings
        extensions_changed = False
        if candidate is not None and (self.extensions_goal_state is None or
                                      created_on(candidate) > created_on(
                                          self.extensions_goal_state)):
            if self.extensions_goal_state is not None:
                log.info("extensions goal state: %s created %s (was %s created %s)",
                         "FastTrack" if is_fast_track(candidate) else "Fabric",
                         created_on(candidate).isoformat(),
                         "FastTrack" if is_fast_track(self.extensions_goal_state) else "Fabric",
                         created_on(self.extensions_goal_state).isoformat())
            self.extensions_goal_state = candidate
            extensions_changed = True
        elif candidate is not None and candidate is not self.extensions_goal_state:
            log.info("a %s goal state created %s is not newer than the current one (%s): "
                     "skipped", "FastTrack" if is_fast_track(candidate) else "Fabric",
                     created_on(candidate).isoformat(),
                     created_on(self.extensions_goal_state).isoformat())
        summary = frozenset(c.summary()["thumbprint"] + ("+key" if c.has_private_key else "")
                            for c in certificates)
        certificates_changed = summary != self._certificate_summary
        # Everything fetched: now it is the state (a failure above kept the previous one).
        self.goal_state, self.full, self.certificates = goal_state, full, certificates
        if vm_settings is not None:
            self.vm_settings = vm_settings
        self._certificate_summary = summary
        return Update(goal_state, full, self.extensions_goal_state, certificates,
                      goal_state_changed, vm_settings is not None, extensions_changed,
                      certificates_changed)


def _merged(first: Update, second: Update) -> Update:
    """The result of an update and its forced retry, as one."""
    return Update(second.goal_state, second.full, second.extensions_goal_state,
                  second.certificates,
                  first.goal_state_changed or second.goal_state_changed,
                  first.vm_settings_changed or second.vm_settings_changed,
                  first.extensions_changed or second.extensions_changed,
                  first.certificates_changed or second.certificates_changed)
