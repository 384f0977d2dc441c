"""guestagentd's command line: with no argument (systemd's ExecStart) the defaults are taken
without loading argparse, which would stay in the root process for the life of the VM."""

from supervisor import daemon


def test_no_argument_means_argparse_s_own_defaults():
    # Else `guestagentd` and `guestagentd --foreground` would differ.
    assert vars(daemon.parse_args([])) == vars(daemon._parser().parse_args([]))


def test_arguments_still_go_through_argparse():
    args = daemon.parse_args(["--config", "/x.conf", "--daemonize"])
    assert args.config == "/x.conf" and args.daemonize and not args.foreground
