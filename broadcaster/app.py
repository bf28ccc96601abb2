"""The composition root: settings → capture source → hub → WebSocket server. :class:`App`.

``pgcast serve`` calls :func:`run`. Trigger mode builds a :class:`cdc.listen.OutboxSource`;
replication mode a :class:`cdc.replication.ReplicationSource` on slot ``consumer_name``. SIGTERM
and SIGINT drain: the server stops accepting, every socket gets what is queued for it and a close
frame (1001), the capture position is saved (``source.close()``) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from broadcaster.config import ConfigError, Settings, build_verifier
from broadcaster.connection import ConnectionLimits
from broadcaster.hub import Hub
from broadcaster.ws_server import RealtimeServer, Route, ServerOptions
from cdc.catalog import Catalog
from cdc.changes import Position
from cdc.errors import CdcError
from cdc.listen import OutboxSource
from cdc.replication import ReplicationSource

__all__ = ["App", "AppOptions", "run", "serve"]

log = logging.getLogger(__name__)

NO_AUTH_WARNING = (
    "\n"
    "**********************************************************************\n"
    "*  pgcast is running WITHOUT AUTHENTICATION (--no-auth).             *\n"
    "*  Anyone who can reach this port can read every captured change.    *\n"
    "*  Use this for local development only.                              *\n"
    "**********************************************************************"
)


@dataclass(frozen=True, slots=True)
class AppOptions:
    """Settings that are not in :class:`~broadcaster.config.Settings`."""

    compression: bool = False
    pages: bool = False
    routes: Mapping[str, Route] = field(default_factory=dict)


class App:
    """A running pgcast server: source, hub, server.

    Args:
        settings: validated settings.
        options: extra options.
    """

    def __init__(self, settings: Settings, options: AppOptions = AppOptions()) -> None:  # noqa: B008
        self.settings = settings
        self.options = options
        self.verifier = build_verifier(settings)
        self.source: OutboxSource | ReplicationSource
        if settings.capture == "replication":
            self.source = ReplicationSource(
                settings.database_url,
                slot=settings.consumer_name,
                consumer=f"{settings.consumer_name}_slot",
            )
        elif settings.capture == "trigger":
            self.source = OutboxSource(
                settings.database_url, consumer=settings.consumer_name, retention=settings.retention
            )
        else:  # pragma: no cover - the settings validate the choice
            raise ConfigError(f"unknown capture mode {settings.capture!r}")
        self.catalog = Catalog(settings.database_url)
        self.hub = Hub(self.source, max_record_bytes=settings.max_record_bytes)
        limits = ConnectionLimits(
            max_channels=settings.max_channels_per_socket,
            max_joins_per_second=settings.max_joins_per_second,
            max_events_per_second=settings.max_events_per_second,
            idle_timeout=settings.heartbeat_timeout_s,
            buffer_bytes=settings.max_socket_buffer_bytes,
        )
        server_options = ServerOptions(
            host=settings.host,
            port=settings.port,
            compression=options.compression,
            max_frame_bytes=settings.max_frame_bytes,
            limits=limits,
            pages=options.pages,
            routes=options.routes,
        )
        self.server = RealtimeServer(
            self.hub, self.catalog, self.verifier, server_options, capture_running=self._running
        )
        self._hub_task: asyncio.Task[None] | None = None
        self.failed = asyncio.Event()

    def _running(self) -> bool:
        return self._hub_task is not None and not self._hub_task.done()

    async def start(self) -> None:
        """Start capture and listen.

        Raises:
            CdcError: the database cannot be read (e.g. pgcast is not installed in it).
            OSError: the port cannot be bound.
        """
        # Start from "now", not from the stored consumer position: changes committed while no
        # pgcast was running have nobody to go to (clients rejoin only after this start, and
        # Supabase does not replay postgres_changes either), and replaying a long backlog on
        # start would only delay live changes. Acknowledged positions are still stored, so
        # resuming reconnecting subscribers from their position stays possible later.
        start: Position | None
        if isinstance(self.source, ReplicationSource):
            # The slot keeps what was not confirmed: resume from it (nothing emitted twice).
            await self.source.check()
            start = None
        else:
            start = await self._current_position()
        self._hub_task = asyncio.create_task(self._run_hub(start))
        await self.server.start()
        log.info(
            "pgcast listening on ws://%s:%d/realtime/v1/websocket",
            self.settings.host,
            self.server.port,
        )

    async def _current_position(self) -> Position:
        assert isinstance(self.source, OutboxSource)
        try:
            return await self.source.current_position()
        except CdcError:
            raise
        except Exception as exc:
            text = str(exc)
            if "pgcast" in text and "does not exist" in text:
                text += " (run `pgcast migrate --db URL` first)"
            raise CdcError(f"cannot read the capture position: {text}") from exc

    async def _run_hub(self, start: Position | None) -> None:
        try:
            await self.hub.run(start)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("capture stopped")
            self.failed.set()
        else:
            log.error("capture ended")
            self.failed.set()

    async def stop(self) -> None:
        """Drain: stop capture, close every socket (1001), save the position, release all."""
        if self._hub_task is not None:
            self._hub_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hub_task
        await self.server.drain()
        await self.source.close()
        await self.catalog.close()


async def serve(settings: Settings, options: AppOptions = AppOptions()) -> int:  # noqa: B008
    """Run until SIGTERM/SIGINT (exit code 0) or until capture fails (1).

    Raises:
        ConfigError: the settings cannot be served (e.g. replication capture).
        CdcError: the database cannot be read.
    """
    if settings.no_auth:
        log.warning(NO_AUTH_WARNING)
    app = App(settings, options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(app.failed.wait())
    await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
    for task in (stopped, failed):
        task.cancel()
    log.info("draining")
    await app.stop()
    log.info("stopped")
    return 1 if app.failed.is_set() else 0


def run(settings: Settings, options: AppOptions = AppOptions()) -> int:  # noqa: B008
    """Run the server in a new event loop (uvloop where it is installed)."""
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(settings, options))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, options))
