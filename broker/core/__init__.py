"""core: the broker's vocabulary, sans-IO (no trio, no sockets).

Events and their ids (position vectors), topic names and patterns, per-topic history, replay
plans (what a resuming client gets), the engine interface (what an event store promises) and
the error tree. Everything here is plain synchronous code, tested with plain ``def`` tests.
"""
