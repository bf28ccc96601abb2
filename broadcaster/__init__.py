"""pgcast delivery: the Supabase Realtime protocol over WebSocket (and SSE), filters, fan-out."""

__all__: list[str] = []
