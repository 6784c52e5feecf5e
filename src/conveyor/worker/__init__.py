"""The worker: consuming jobs, running them, and supervising worker processes."""
