from shoal.cluster.status import human_duration, parse_time, status_text

T0 = parse_time("2026-11-25T10:00:00.123456789Z")


def test_human_duration_matches_go_units():
    cases = {
        0.4: "Less than a second",
        1: "1 second",
        59: "59 seconds",
        60: "About a minute",
        119: "About a minute",
        120: "2 minutes",
        45 * 60: "45 minutes",
        46 * 60: "About an hour",
        90 * 60: "2 hours",
        47 * 3600: "47 hours",
        3 * 86400: "3 days",
        20 * 86400: "2 weeks",
        100 * 86400: "3 months",
        800 * 86400: "2 years",
    }
    for seconds, text in cases.items():
        assert human_duration(seconds) == text, seconds


def test_timestamps_with_nanoseconds_and_the_zero_time():
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert abs(T0 - parse_time("2026-11-25T10:00:00Z") - 0.123456) < 1e-6


def test_status_text_as_dockerd_writes_it():
    run = {
        "Running": True,
        "StartedAt": "2026-11-25T10:00:00.123456789Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
    }
    assert status_text(run, T0 + 5) == "Up 5 seconds"
    assert status_text({**run, "Paused": True}, T0 + 130) == "Up 2 minutes (Paused)"
    assert status_text({**run, "Health": {"Status": "starting"}}, T0 + 1) == "Up 1 second (health: starting)"
    assert status_text({**run, "Health": {"Status": "healthy"}}, T0 + 1) == "Up 1 second (healthy)"
    exited = {"Running": False, "ExitCode": 3, "StartedAt": run["StartedAt"], "FinishedAt": run["StartedAt"]}
    assert status_text(exited, T0 + 7200) == "Exited (3) 2 hours ago"
    assert status_text({"Running": False, "StartedAt": "0001-01-01T00:00:00Z"}, T0) == "Created"
    assert status_text({"Dead": True, "StartedAt": run["StartedAt"]}, T0) == "Dead"
