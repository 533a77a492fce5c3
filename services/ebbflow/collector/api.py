"""The collector's gRPC API: GetSnapshot, WatchSnapshots, GetHistory.

With several collectors, each scrapes only its share of the models
(shards.py), yet any of them answers for any model, so a client (the CLI,
the forecaster refilling its history) may ask whichever collector it finds:
a model this collector owns is answered from its own scrapes; another
collector's model from what this one heard on NATS, its latest published
snapshot (`ebbflow.load.<model>`) and the history rows those snapshots
carried, on top of what it read from JetStream at start. The alternative,
refusing with the owner's address, would make every client follow
redirects and fail while ownership moves. What differs for a model owned
elsewhere: a snapshot too large for a NATS message lacks its replica
details there (the owner's GetSnapshot has them), and a collector started
while another ran lacks the last `history_flush_s` of history before its
start (the owner had not written it to JetStream yet).
"""

from __future__ import annotations

import math
import time
from typing import AsyncIterator

import grpc

from ebbflow.collector.history import HistoryError
from ebbflow.collector.service import Collector
from ebbflow.v1 import collector_pb2, collector_pb2_grpc, load_pb2

DEFAULT_RANGE_S = 3600.0


class CollectorApi(collector_pb2_grpc.CollectorServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def _known(self) -> set[str]:
        return set(self.collector.latest) | set(self.collector.history) | self.collector.view.known_models()

    async def _check_model(self, model: str, context: grpc.aio.ServicerContext) -> None:
        if model not in self._known():
            known = ", ".join(sorted(self._known())) or "none yet"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no load data for model '{model}'; known models: {known}")

    async def GetSnapshot(self, request: collector_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext) -> collector_pb2.GetSnapshotResponse:
        latest = self.collector.latest
        if not request.model:
            return collector_pb2.GetSnapshotResponse(snapshots=[latest[m] for m in sorted(latest)])
        await self._check_model(request.model, context)
        if request.model not in latest:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no snapshot of '{request.model}' yet: the collector publishes one per interval")
        return collector_pb2.GetSnapshotResponse(snapshots=[latest[request.model]])

    async def WatchSnapshots(
        self, request: collector_pb2.WatchSnapshotsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[collector_pb2.WatchSnapshotsResponse]:
        wanted = set(request.models)
        for model in sorted(wanted):
            await self._check_model(model, context)

        def pick(snapshots: dict[str, load_pb2.LoadSnapshot]) -> collector_pb2.WatchSnapshotsResponse:
            return collector_pb2.WatchSnapshotsResponse(snapshots=[s for m, s in sorted(snapshots.items()) if not wanted or m in wanted])

        queue = self.collector.watch()
        try:
            if self.collector.latest:
                yield pick(dict(self.collector.latest))
            while True:
                yield pick(await queue.get())
        finally:
            self.collector.unwatch(queue)

    async def GetHistory(self, request: collector_pb2.GetHistoryRequest, context: grpc.aio.ServicerContext) -> collector_pb2.GetHistoryResponse:
        await self._check_model(request.model, context)
        for name in ("start_unix_s", "end_unix_s", "step_s"):
            value = getattr(request, name)
            if value < 0 or math.isnan(value) or math.isinf(value):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a finite number >= 0, got {value}")
        end = request.end_unix_s or time.time()
        start = request.start_unix_s or end - DEFAULT_RANGE_S
        history = self.collector.history.get(request.model)
        if history is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no history of '{request.model}' yet")
        try:
            times, series, step = history.query(start, end, request.step_s)
        except HistoryError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return collector_pb2.GetHistoryResponse(
            model=request.model,
            step_s=step,
            time_unix_s=times.tolist(),
            series=[collector_pb2.HistorySeries(name=name, values=values.tolist()) for name, values in series.items()],
        )
