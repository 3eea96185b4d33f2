"""The Lua scripts of the stream mechanics (run through `streams.scripts.Script`)."""
