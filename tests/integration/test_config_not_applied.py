"""The real guestagentd started with a waagent.conf that sets keys it does not act on yet: one
`event=config_not_applied` line per key at start, and it runs as usual."""


def test_each_key_not_applied_is_logged_once_at_start(make_agent):
    agent = make_agent({"OS.EnableFIPS": "y", "OS.UpdateRdmaDriver": "y",
                        "Logs.Verbose": "n"}).start()
    agent.wait_all_running()
    log = agent.log()
    assert log.count("event=config_not_applied ") == 2, log
    assert log.count("event=config_not_applied key=OS.EnableFIPS ") == 1, log
    assert log.count("event=config_not_applied key=OS.UpdateRdmaDriver ") == 1, log
    assert "FIPS mode is not set up" in log
    assert "key=Logs.Verbose" not in log
