import resource

import pytest
import trio

# Churn tests hold a few thousand sockets (both ends live in this process).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < 8192:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, _hard), _hard))


def count_tasks() -> int:
    """Every task alive in this trio run."""

    def walk(task: trio.lowlevel.Task) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    return walk(trio.lowlevel.current_root_task())


@pytest.fixture
def task_count():
    return count_tasks
