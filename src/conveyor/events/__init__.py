"""Event streams on top of the Broker: producers, consumers, consumer groups, subscribers.

Pure parts (the partitioner, group assignors, windows) have no I/O; the producer, consumer
and subscriber runtime are clients of the Broker interface.
"""
