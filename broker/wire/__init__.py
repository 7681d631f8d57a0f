"""wire: the wire formats, sans-IO (bytes and values in, bytes and values out).

SSE framing (``sse``), WebSocket frames (``websocket``), publish-body decoding (``codecs``) and
WebSocket commands (``commands``). Each event is encoded once per format; the bytes are shared.
"""
