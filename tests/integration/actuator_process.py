"""A LocalActuator alone in its own process, for tests that kill it the way a crash would.

    python -m tests.integration.actuator_process NATS_URL STATE_DIR

Adopts what an earlier run left, prints its adoption report as one JSON line, then reconciles until killed
(SIGKILL: its replicas must keep serving) or stopped (SIGTERM: a clean shutdown).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from ebbflow.actuator.local import LocalActuator
from ebbflow.actuator.replica import ActuatorMetrics
from ebbflow.runtime.bus import connect
from ebbflow.runtime.config import ActuatorConfig

CONFIG = ActuatorConfig(time_scale=0.02, drain_propagation_s=0.3, exit_timeout_s=3, reconcile_interval_s=0.5)


async def main(nats_url: str, state_dir: Path) -> None:
    bus = await connect(nats_url, name="actuator-process")
    actuator = LocalActuator(CONFIG, bus, state_dir, ActuatorMetrics(CollectorRegistry()))
    report = await actuator.adopt_previous_run()
    await actuator.publish_model_configs()
    print(json.dumps({"adopted": list(report.adopted), "cleaned": report.cleaned}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await actuator.run(stop)
    await actuator.shutdown()
    await bus.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
