"""The demo's small campaign on the real dev server: five rows, one skipped, each its own order."""

from __future__ import annotations

import io

from rich.console import Console

from tests.helpers import settings_for_tests
from workers import create_worker
from workers.demo import live_view, run_campaign_demo


async def test_the_demo_campaign_ends_as_the_readme_says(dev_env, task_queue) -> None:
    settings = settings_for_tests(task_queue=task_queue, campaign_rows_per_second=2, campaign_burst=2)
    async with create_worker(dev_env.client, task_queue=task_queue, settings=settings):
        summary = await run_campaign_demo(dev_env.client, settings, Console(quiet=True), timeout=120)
    assert summary.row_stats.model_dump() == {
        "calling": 0, "completed": 4, "failed": 0, "not_launched": 0,
        "pending": 0, "retry": 0, "skipped": 1, "total": 5,
    }  # fmt: skip
    assert summary.by_outcome == {"interested": 1, "completed": 1, "not_interested": 1}
    assert summary.attempts == 1 + 2 + 2 + 3 and summary.reached_human == 3


def test_the_live_view_ends_its_line_off_a_terminal() -> None:
    """`make demo | tee demo.log`: what follows the live display starts on a line of its own."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    with live_view(console) as live:
        live.update("rows 5")
    console.print("next")
    assert out.getvalue().endswith("rows 5\nnext\n")
