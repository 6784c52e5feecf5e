"""The demos: `python -m conveyor.demo.queues` and the newsletter campaign run to the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.demo.queues", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_consumes_every_published_message_and_exits_zero() -> None:
    result = _run_demo("--messages", "2000")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout
    assert re.search(r"published +2000 messages", summary), summary
    assert re.search(r"consumed +2000 of 2000 messages, each exactly once", summary), summary
    assert re.search(r"queue depth +0$", summary, re.MULTILINE), summary
    acked = [int(n) for n in re.findall(r"consumer-\d +(\d+) acked", summary)]
    assert len(acked) == 2, summary
    assert sum(acked) == 2000, summary
    # What the quitting consumer held comes back, to the other consumer, once its lease lapses
    # (normally 5 messages; none if the other consumer had already taken everything).
    held = sum(int(n) for n in re.findall(r"consumer-2 +then quit holding (\d+) unacked", summary))
    (redelivered,) = re.findall(r"redelivered +(\d+) ", summary)
    assert int(redelivered) == held, summary
    (again,) = re.findall(r"consumer-1 +\d+ acked(?:, (\d+) of them redeliveries)?$", summary, re.M)
    assert int(again or 0) == held, summary
    assert re.search(r"latency p50 +\d+\.\d ms", summary), summary


def test_demo_reuses_a_given_database_file(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    for _ in range(2):
        result = _run_demo("--messages", "500", "--db", str(db))
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.search(r"consumed +500 of 500 messages", result.stdout), result.stdout
    assert db.exists()


def test_the_newsletter_demo_sends_retries_and_dead_letters_then_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conveyor.demo", "--once", "--emails", "2000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout
    queued = re.search(r"queued 2,000 emails in (\d+) ms", summary)
    assert queued, summary
    assert int(queued.group(1)) < 1000
    assert re.search(r"sent +1,996$", summary, re.MULTILINE), summary  # 4 invalid addresses
    assert re.search(r"retried +200 ", summary), summary  # every 10th reader greylisted once
    assert re.search(r"dead-lettered +4 ", summary), summary
    assert "console: http://127.0.0.1:" in summary


def test_the_readme_describes_make_demo_as_the_campaign_it_runs() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe, "no demo target in the Makefile"
    assert recipe.group(1).endswith("-m conveyor.demo")  # the newsletter campaign above
    readme = (ROOT / "README.md").read_text()
    quick_start = re.search(r"^make demo +# (.+)$", readme, re.MULTILINE)
    assert quick_start, "no `make demo` line in the README's quick start"
    assert "newsletter campaign" in quick_start.group(1)
    described = readme[readme.index("`make demo` runs") :]
    for part in ("SMTP server", "autoscaled worker processes", "console", "10,000 emails",
                 "dead-letter the bounces", "--once"):  # fmt: skip
        assert part in described, part
