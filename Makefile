# The two commands a newcomer runs are `make demo` and `make test` (README.md).
# Everything runs from a private venv that sees Debian's python3-* packages
# (--system-site-packages), so the code is tested on the versions an image ships.

PYTHON  ?= /usr/bin/python3
VENV    ?= /opt/guestagent
PY      := $(VENV)/bin/python
PYTEST_ARGS ?=
# Tests start the installed guestagentd, agentctl and workers from this venv.
export GUESTAGENT_VENV := $(VENV)

.PHONY: deps venv test test-host test-system demo install check-config bench clean

# The set-up step: the Debian packages the agent and the tests need, listed one per line in
# packaging/debian-runtime.txt (what an image needs; the VM image reads it too) and
# .ci/apt-packages.txt (the tests). Installs only what is missing; as non-root it says so in
# one line and fails.
DEB_LISTS := packaging/debian-runtime.txt .ci/apt-packages.txt
.DEFAULT_GOAL := venv
# Checked before anything runs, so a non-root user gets this one line and nothing else.
NEEDS_ROOT := deps venv test test-host test-system demo check-config venv-pypi test-pypi
ifneq ($(shell id -u),0)
ifneq ($(filter $(NEEDS_ROOT),$(MAKECMDGOALS)),)
$(error make $(firstword $(filter $(NEEDS_ROOT),$(MAKECMDGOALS))) needs root: run it as root (e.g. sudo make $(firstword $(filter $(NEEDS_ROOT),$(MAKECMDGOALS)))); it installs the Debian packages it needs, then runs)
endif
endif
deps:
	@sh packaging/debian-deps "$(or $(firstword $(MAKECMDGOALS)),deps)" $(DEB_LISTS)

$(PY): | deps
	$(PYTHON) -m venv --system-site-packages $(VENV)

# Reinstalled on every run: workers run as unprivileged users from the venv's copy,
# never from the checkout (which may sit in a folder they cannot read).
venv: deps $(PY)
	@# setuptools reuses build/lib: a module deleted from the tree would be installed still.
	rm -rf build
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .

# The whole suite on Debian 12's library versions (host, then VM), then the host tests whose code
# calls a third-party library again on current PyPI releases (PYPI_TESTS, below): the code must
# run on both.
test: venv venv-pypi
	$(PY) -m pytest tests $(PYTEST_ARGS)
	$(PYPI_PYTEST) $(PYPI_TESTS) -m 'not system' $(PYTEST_ARGS)

test-host: venv
	$(PY) -m pytest tests -m 'not system' $(PYTEST_ARGS)

test-system: venv
	$(PY) -m pytest tests/system $(PYTEST_ARGS)

# The whole agent provisions a VM from the emulator in a confined host (issue 7).
demo: venv
	$(PY) -m emulator.demo

check-config: venv
	$(VENV)/bin/guestagentd --check-config --config etc/waagent.conf

clean:
	rm -rf build *.egg-info

# ---- install: how an image maintainer installs guestagent (owner: tests/system, issue 6) ----
#   make install                                   on the running system (root)
#   make install DESTDIR=/path/to/rootfs           into an image's root filesystem (chroot;
#                                                  it must have python3 and python3-venv)
#   WHEEL=dist/guestagent-X-py3-none-any.whl      install that wheel instead of building one
# Dependencies come from the distro (python3-psutil, -requests, -cryptography, -asn1crypto,
# -daemon, -setproctitle, -defusedxml): the venv sees them through --system-site-packages and
# pip installs the project alone (--no-deps), offline (--no-index).
# Then enable it: systemctl enable --now guestagent.service  (or systemctl --root=DESTDIR enable).
DESTDIR     ?=
WHEEL       ?=
WHEEL_DIR   ?= build/wheel
UNITDIR     ?= /usr/lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
SBINDIR     ?= /usr/sbin
UNITS       := guestagent.service guestagent.slice guestagent-extensions.slice \
               guestagent-logcollector.slice
# Inside DESTDIR the venv is made by the image's own python3 (a venv is not relocatable).
IN_ROOT     := $(if $(DESTDIR),chroot $(DESTDIR) ,)

install:
	@set -e; whl="$(WHEEL)"; \
	if [ -z "$$whl" ]; then \
	    rm -rf $(WHEEL_DIR); \
	    $(PYTHON) -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEEL_DIR) .; \
	    whl=$$(ls $(WHEEL_DIR)/guestagent-*.whl); \
	fi; \
	stage=$$(mktemp -d $(DESTDIR)/tmp/guestagent-install.XXXXXX); \
	trap 'rm -rf "$$stage"' EXIT; \
	cp "$$whl" "$$stage/"; \
	echo "install: venv $(VENV) + $$(basename $$whl)$(if $(DESTDIR), in $(DESTDIR))"; \
	$(IN_ROOT)/usr/bin/python3 -m venv --system-site-packages $(VENV); \
	$(IN_ROOT)$(VENV)/bin/python -m pip install --quiet --no-deps --no-index --force-reinstall \
	    --disable-pip-version-check "$${stage#$(DESTDIR)}/$$(basename $$whl)"
	install -d -m 0755 $(DESTDIR)/etc $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SBINDIR)
	@# An image that ran waagent keeps its /etc/waagent.conf: same file, same keys.
	[ -e $(DESTDIR)/etc/waagent.conf ] || install -m 0644 etc/waagent.conf $(DESTDIR)/etc/waagent.conf
	install -m 0644 $(addprefix systemd/,$(UNITS)) $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/guestagent.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/guestagent.conf
	install -m 0644 systemd/guestagent.tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/guestagent.conf
	ln -sfn $(VENV)/bin/agentctl $(DESTDIR)$(SBINDIR)/agentctl
	@# Not a link to the venv's entry script: extensions import /usr/sbin/waagent under the
	@# system python, where guestagent's packages are not importable.
	sed 's|@VENV@|$(VENV)|' cli/usr-sbin-waagent.in > $(DESTDIR)$(SBINDIR)/waagent
	chmod 0755 $(DESTDIR)$(SBINDIR)/waagent
	@# The system users: systemd-sysusers where it exists, else the same file read by
	@# cli/accounts.py (groupadd/useradd).
	$(IN_ROOT)sh -c 'if command -v systemd-sysusers >/dev/null; then \
	    systemd-sysusers $(SYSUSERSDIR)/guestagent.conf; \
	else $(VENV)/bin/python -m cli.accounts install $(SYSUSERSDIR)/guestagent.conf; fi'
	@# Without systemd-tmpfiles the supervisor makes its folders itself at start.
	$(if $(DESTDIR),,! command -v systemd-tmpfiles >/dev/null || \
	    systemd-tmpfiles --create $(TMPFILESDIR)/guestagent.conf)
	$(if $(DESTDIR),,[ ! -d /run/systemd/system ] || systemctl daemon-reload)

# ---- deb: the Debian package (packaging/build_deb.py; dpkg-deb only, no network) ----------
#   make deb                     dist/guestagent_<version>_all.deb
# Installs the code under /usr/lib/guestagent, depends on Debian's python3-* packages, and
# replaces Debian's waagent package: dpkg -i dist/guestagent_*_all.deb
DEB_DIR ?= dist
.PHONY: deb
deb:
	$(PYTHON) packaging/build_deb.py $(DEB_DIR)

# ---- the library-bound host tests on current PyPI releases (DESIGN.md "Dependencies": the code
# runs on Debian 12's versions, which `make venv` sees, and on PyPI's). A venv without the
# system's site-packages, the dependencies of setup.cfg at their newest releases (needs PyPI).
# Not the whole host suite a second time (CI under 40 minutes): the tests whose code calls a
# third-party library -- requests, defusedxml, cryptography + asn1crypto (platform client,
# certificates, transport key, emulator), python-daemon and setproctitle (supervisor/daemon.py,
# workers/base.py) -- every unit and contract test, and the whole agent in a confined host. The
# rest (the broker's attack tests, the spawner, the pid file, the resource disk, the install
# paths) runs only the standard library's code, and runs once, on Debian's versions.
PYPI_VENV ?= $(VENV)-pypi
PYPI_TESTS ?= tests/unit tests/contract tests/integration/platform \
              tests/integration/provisioning tests/integration/extensions \
              tests/integration/monitoring tests/integration/test_supervisor.py \
              tests/integration/test_logcollector.py tests/integration/test_waagent_verbs.py \
              tests/integration/security/test_ext_certificates.py
PYPI_PYTEST = GUESTAGENT_VENV=$(PYPI_VENV) $(PYPI_VENV)/bin/python -m pytest
.PHONY: venv-pypi test-pypi
venv-pypi: deps
	[ -x $(PYPI_VENV)/bin/python ] || $(PYTHON) -m venv $(PYPI_VENV)
	rm -rf build
	$(PYPI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade \
	    pip setuptools wheel
	$(PYPI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade \
	    --upgrade-strategy eager '.[test]'
	$(PYPI_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
	    --force-reinstall .
	@$(PYPI_VENV)/bin/python -c "import cryptography, requests, psutil; \
	    print('venv-pypi: cryptography', cryptography.__version__, 'requests', \
	    requests.__version__, 'psutil', psutil.__version__)"

test-pypi: venv-pypi
	$(PYPI_PYTEST) $(PYPI_TESTS) -m 'not system' $(PYTEST_ARGS)
