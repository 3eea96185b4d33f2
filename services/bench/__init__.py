"""`rdisplay bench`: an open-loop load generator over real Socket.IO clients (SPEC section 8).

`plan` is the data that crosses processes, `agent` one load-generator process, `generator` the
parent that schedules runs and merges results, `effects` the optional duplicate check.
"""
