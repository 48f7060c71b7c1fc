"""The model service killed (SIGKILL) during a redeploy, restarted as `make run`'s supervisor restarts it.

A redeploy is what deploy_model asks of the service: `POST /admin/models/fraud_detector {"tag": ...:v2}` while
it serves v1. The switch is sent, and the whole process tree is killed with SIGKILL at several points after it
(every process group of the tree: `bentoml serve`'s arbiter and its worker, which runs in a session of its own):
just after sending, after half a switch's measured duration, and as soon as the switch is answered. `Supervisor.check()`
(devstack/supervisor.py) then starts it again on the same port, state folder and settings. Checked
after each kill:

- it starts: the pointer file is whole JSON naming v1 or v2 (the kill came before or after its atomic write);
- it serves exactly the model its pointer names, and every answer of a background client (before the kill,
  and after the restart) is exactly what the version it names predicts offline: no half-loaded model answered;
- re-sending the switch (deploy_model's retry) serves v2, and the pointer names it.

Each kill point's outcome and restart time is printed (`-rP`).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from devstack import services
from devstack.processes import ManagedProcess, free_port
from devstack.supervisor import Supervisor
from tests.fixtures.serving import ADMIN_TOKEN, DEMO_CONFIG, DEMO_MODEL, MODEL_STORE
from tests.serving.conftest import offline_predictions, records_of

V1, V2 = f"{DEMO_MODEL}:v1", f"{DEMO_MODEL}:v2"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# When the tree is killed after the switch is sent: at once, after half a switch's measured duration (the shorter
# of two), and (None) as soon as the switch is answered, when its pointer was just written.
KILL_POINTS = (0.0, 0.5, None)


class Client(threading.Thread):
    """Sends the same records over and over; keeps what each answer said and counts failed requests."""

    def __init__(self, url: str, records: list[dict[str, Any]]):
        super().__init__(daemon=True)
        self.url, self.records = url, records
        self.answers: list[dict[str, Any]] = []
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{self.url}/models/{DEMO_MODEL}/predict", json={"records": self.records})
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.answers.append(response.json())
                else:
                    self.failed += 1
                    time.sleep(0.05)


def _kill_tree(process: ManagedProcess) -> None:
    root = psutil.Process(process.pid)
    groups = {os.getpgid(p.pid) for p in [root, *root.children(recursive=True)]}
    for group in groups:
        os.killpg(group, signal.SIGKILL)


def _switch(url: str, tag: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/models/{DEMO_MODEL}", json={"tag": tag}, headers=HEADERS, timeout=60)


def _serving(url: str) -> str:
    response = httpx.get(f"{url}/admin/models/{DEMO_MODEL}", headers=HEADERS, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["serving"]["tag"]


def test_killed_during_a_redeploy_it_comes_back_on_one_model_and_the_resent_switch_lands(
    stored_models, config, splits, tmp_path_factory
):
    frame = splits["test"].iloc[:20]
    records = records_of(frame, config.dataset)
    offline = {}
    for version in ("1", "2"):
        labels, probabilities = offline_predictions(stored_models.onnx[version], frame, config.dataset)
        offline[version] = [
            {"label": label, "probabilities": {"0": float(p[0]), "1": float(p[1])}}
            for label, p in zip(labels.tolist(), probabilities.astype("float64").tolist(), strict=True)
        ]
    assert offline["1"] != offline["2"], "the two versions must answer differently"

    state_dir = tmp_path_factory.mktemp("kill-state")
    home = tmp_path_factory.mktemp("kill-home")
    (home / "models").symlink_to(MODEL_STORE, target_is_directory=True)
    config_dir = tmp_path_factory.mktemp("kill-configs")
    (config_dir / DEMO_CONFIG.name).write_bytes(DEMO_CONFIG.read_bytes())
    port = free_port()
    settings = {
        "BENTOML_HOME": str(home),
        "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN,
        "MLOPS_SERVING_STATE_DIR": str(state_dir),
        "MLOPS_CONFIG_DIR": str(config_dir),
        "MLOPS_MODEL_TAG": V1,
    }
    logs = tmp_path_factory.mktemp("kill-logs")
    said: list[str] = []
    supervisor = Supervisor(say=said.append)
    pointer = state_dir / "models" / f"{DEMO_MODEL}.json"
    rows = []
    try:
        process = supervisor.start("serving", lambda: services.start_serving(port, logs, settings), restart=True)
        url = process.url
        # A switch's duration, measured: v1 -> v2 -> v1 (the pointer then names v1, as after a deploy of v1).
        durations = []
        for tag in (V2, V1):
            started = time.monotonic()
            assert _switch(url, tag).status_code == 200
            durations.append(time.monotonic() - started)
        switch_seconds = min(durations)

        for point in KILL_POINTS:
            assert _serving(url) == V1 and json.loads(pointer.read_text())["tag"] == V1
            client = Client(url, records)
            client.start()
            time.sleep(0.3)
            answered: dict[str, Any] = {}

            def send_switch(answered=answered) -> None:
                try:
                    answered["status"] = _switch(url, V2).status_code
                except httpx.HTTPError as exc:
                    answered["error"] = type(exc).__name__

            sender = threading.Thread(target=send_switch, daemon=True)
            sender.start()
            if point is None:
                sender.join(30)
            else:
                time.sleep(point * switch_seconds)
            killed = time.monotonic()
            _kill_tree(supervisor.processes[0])
            switch_answered = answered.get("status")
            sender.join(30)
            while supervisor.processes[0].is_running():
                time.sleep(0.01)
            supervisor.check()  # what `make run` does every second: the exited service is started again
            restart_seconds = time.monotonic() - killed
            assert supervisor.processes[0].url == url

            # It starts on a whole pointer, and serves exactly what the pointer names.
            named = json.loads(pointer.read_text())["tag"]
            assert named in (V1, V2), named
            assert _serving(url) == named
            time.sleep(1.0)  # the client's answers from the restarted service
            client.stop.set()
            client.join(15)
            after_restart = [a for a in client.answers if a["model_version"] == named.rpartition(":v")[2]][-5:]
            assert after_restart, "no answer after the restart"
            # Every answer, before the kill and after the restart, is exactly one whole model's.
            versions = collections.Counter(a["model_version"] for a in client.answers)
            for answer in client.answers:
                assert answer["predictions"] == offline[answer["model_version"]], answer["model_version"]
            leftovers = sorted(p.name for p in pointer.parent.iterdir() if p.name.startswith(f".{DEMO_MODEL}."))

            # deploy_model's retry: the switch sent again lands.
            resent = _switch(url, V2)
            assert resent.status_code == 200, resent.text
            assert _serving(url) == V2 and json.loads(pointer.read_text())["tag"] == V2
            answer = httpx.post(f"{url}/models/{DEMO_MODEL}/predict", json={"records": records}, timeout=30).json()
            assert (answer["model_version"], answer["predictions"]) == ("2", offline["2"])
            rows.append(
                {
                    "kill": "once answered" if point is None else f"{point:g} x {switch_seconds * 1000:.0f} ms",
                    "switch answered before the kill": switch_answered or "no",
                    "pointer and served after restart": named,
                    "restart (s)": round(restart_seconds, 1),
                    "answers by version": dict(versions),
                    "failed requests": client.failed,
                    "pointer temp files left": len(leftovers),
                    "resent switch": f"{resent.status_code}, serves {V2}",
                }
            )
            assert _switch(url, V1).status_code == 200  # the next kill point starts from v1 again
    finally:
        supervisor.stop_all()
    print(f"\nswitch v1 <-> v2 took {', '.join(f'{d * 1000:.0f} ms' for d in durations)}; supervisor: {said}")
    for row in rows:
        print("  " + "; ".join(f"{k}: {v}" for k, v in row.items()))
    assert "Traceback" not in Path(logs / "serving.log").read_text(errors="replace")
