import math

from hypothesis import given
from hypothesis import strategies as st

from shoal.cluster.status import RunState, human_duration, parse_time, status_text, status_until

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


_STATES = st.fixed_dictionaries(
    {
        "Running": st.booleans(),
        "Paused": st.booleans(),
        "Restarting": st.booleans(),
        "ExitCode": st.integers(0, 3),
    },
    optional={"FinishedAt": st.just("2026-11-25T09:00:00.5Z"), "Health": st.just({"Status": "healthy"})},
).map(lambda s: {**s, "StartedAt": "2026-11-25T10:00:00.123456789Z"})


# where the text changes (a minute, 46 minutes, half hours, a day, two years and three) and anywhere
_NEAR = st.sampled_from([0, 59, 60, 45 * 60, 46 * 60, 5400, 86400, 2 * 365 * 86400, 3 * 365 * 86400])
_AFTER = st.one_of(
    st.builds(lambda at, d: at + d, _NEAR, st.floats(-2000, 2000)), st.floats(-5, 4 * 365 * 86400)
)


@given(state=_STATES, after=_AFTER, later=st.floats(0, 1))
def test_a_status_reads_the_same_until_the_time_it_gives_and_no_longer_is_promised(state, after, later):
    """`status_until`'s time: any moment before it reads the very text (so a cache of it is never stale)."""
    now = T0 + after
    text, until = status_until(state, now)
    assert text == status_text(state, now) and until > now
    if until != math.inf:
        at = now + (until - now) * later * 0.999999
        assert status_text(state, at) == text, (now, at, until)


def test_the_years_text_moves_on_the_whole_hour_not_the_rounded_one():
    """go-units' years read whole hours while the rest read rounded ones: 20 minutes before three years
    the text is "2 years", and its time is the whole hour, not the half hour after it."""
    state = {"Running": True, "StartedAt": "2026-11-25T10:00:00.123456789Z"}
    now = T0 + 3 * 365 * 86400 - 1200
    text, until = status_until(state, now)
    assert text == "Up 2 years" and until == T0 + 3 * 365 * 86400
    assert status_text(state, until) == "Up 3 years"


def test_the_kept_state_reads_as_the_document_and_holds_none_of_its_bulk():
    """The manager keeps a RunState per container (30,000 at 1,000 nodes), not inspect's State: it
    reads the same STATUS and does not hold the health check's outputs or the timestamp strings."""
    doc = {
        "Status": "running",
        "Running": True,
        "Paused": False,
        "Restarting": False,
        "OOMKilled": False,
        "Dead": False,
        "Pid": 4242,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2026-11-25T10:00:00.123456789Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {
            "Status": "healthy",
            "FailingStreak": 0,
            "Log": [{"Start": "2026-11-25T10:00:01Z", "ExitCode": 0, "Output": "ok " * 300}] * 5,
        },
    }
    kept = RunState.of(doc)
    want = ("Up About a minute (healthy)", T0 + 120)
    assert status_until(kept, T0 + 90) == status_until(doc, T0 + 90) == want
    assert not any(isinstance(getattr(kept, f), dict | list) for f in kept.__slots__)
    assert RunState.of({}) == RunState()  # a document without State reads as dockerd's zero values
    assert status_text(RunState(), T0) == "Created"
