"""Tasks: functions run by workers, and the Job handles that follow them."""
