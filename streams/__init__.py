"""Redis Streams mechanics: append, consumer-group runner, reclaim, dead letter, replay.

Nothing here knows about orders, screens or Socket.IO.
"""
