"""The Temporal side of benches/compare.sh: a workflow with one activity.

Waggle's bench BPMN process has one service task, so each instance costs the engine one job handed
to a worker and one completion written back. The Temporal equivalent is a workflow that schedules one
activity and returns its result: the server records the activity's scheduling, its start and its
completion in the workflow's durable history, and the worker runs the workflow code and the
activity. The activity does nothing, as Waggle's bench worker does nothing but complete its job.

These definitions live in a module of their own because the Python SDK re-imports a workflow's
module inside its sandbox; keeping it to the workflow and the activity keeps that import cheap.
"""

from datetime import timedelta

from temporalio import activity, workflow

TASK_QUEUE = "waggle-compare"


@activity.defn
async def step() -> int:
    """The one step: trivial, so the figures measure the engine, not the work."""
    return 1


@workflow.defn
class OneActivity:
    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity(step, start_to_close_timeout=timedelta(seconds=60))
