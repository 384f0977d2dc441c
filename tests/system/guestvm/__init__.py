"""guestvm: the system-test harness (image.py builds the guest image, vm.py boots and drives a
VM, services.py runs the platform emulator on the host side). See tests/system/README.md."""
