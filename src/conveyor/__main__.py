from conveyor.cli import run

raise SystemExit(run())
