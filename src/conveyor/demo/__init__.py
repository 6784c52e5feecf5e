"""Demos: ``python -m conveyor.demo`` (``make demo``) runs the newsletter campaign;
``python -m conveyor.demo.queues`` shows the queue engine on its own."""
