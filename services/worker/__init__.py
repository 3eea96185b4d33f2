"""The worker: a member of consumer group `projector` that resolves orders and projects."""
