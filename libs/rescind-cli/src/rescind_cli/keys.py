"""`rescind keys rotate | status`: each service's own key command, one after the other.

The rotation needs each service's database and keyring, so it runs as that service's command
(`consent-api keys rotate`, `revocation-worker keys rotate`), with the environment of this process:
run it where the services' settings are (a pod of each, or `make run`'s environment)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rescind_cli.errors import CliError
from rescind_cli.processes import script

SERVICES = {"consent-api": "subject data keys", "revocation-worker": "endpoint secrets"}


def run(action: str, services: list[str], batch_size: int) -> int:
    """Run `<service> keys <action>` for each service; 0 only when every one exited 0."""
    worst = 0
    for service in services:
        command = script(service) if Path(script(service)).exists() else shutil.which(service)
        if command is None:
            raise CliError(f"{service} is not installed here: run `rescind keys` where the service runs")
        argv = [command, "keys", action] + (["--batch-size", str(batch_size)] if action == "rotate" else [])
        print(f"== {service} keys {action} ({SERVICES[service]})", flush=True)
        worst = max(worst, subprocess.run(argv, check=False).returncode)  # noqa: S603 (our own scripts)
    return worst
