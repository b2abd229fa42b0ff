"""`zonepurge worker` starts the Celery worker again when it quits on its own, and stops when told."""

import os
import signal
import sys

from worker.supervise import CHILD_ENV, supervise


def test_a_child_that_exits_by_itself_is_started_again_until_the_supervisor_is_stopped(tmp_path):
    starts = tmp_path / "starts"
    child = [sys.executable, "-c",
             f"import os; open({str(starts)!r}, 'a').write(os.environ[{CHILD_ENV!r}] + '\\n')"]
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # "docker stop" while it waits to restart

    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        assert supervise(child, sleep=sleep) == 0
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert starts.read_text().splitlines() == ["1", "1", "1"]
    assert waits == [2.0, 4.0, 8.0]  # dying young: the backoff grows
