"""edge: the public port. Bytes from strangers become calls on the hub, and back.

The listener and raw HTTP/1.1 data plane (``dataplane``, ``http1``), routes, WebSocket
connections (``wsconnection``), the ASGI adapter for hot routes served by hypercorn (``asgi``),
and the policy a request must pass: auth, CORS, limits (``policy``, ``auth``, ``cors``,
``limits``).
"""
