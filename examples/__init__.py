"""Four small, real jobs running on the broker; see ``examples/README.md``.

Each example is a package with one command (``python -m examples.<name> [--url URL]``) and a
page the broker serves at ``/examples/<name>/``:

- ``job_progress``: a search pipeline reports its stages (retained progress, a final event).
- ``event_browser``: alerts with acknowledgement, a retained unacked summary, ``since=3600``.
- ``token_stream``: an LLM-style answer streamed token by token, then ``done``.
- ``resilient_client``: what a production page needs: backoff, heartbeat timeout, manual
  retry, a connection-quality panel.
"""
