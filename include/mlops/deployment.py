"""Deployment with BentoML: the ONNX model in the BentoML model store with its lineage, the Bento, the rollout.

A model enters the store as `<registered model>:v<MLflow version>` holding `model.onnx`, with labels and
metadata that name where it comes from (MLflow model and run, lakeFS repository and commit). The running
service is told to switch the model's route to it over its authenticated admin API; it builds the new
onnxruntime session beside the old one and swaps them in one step, so no request fails during a rollout, and
the service's other models are not touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import shutil
import time
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.config import Dataset, PipelineConfig

if TYPE_CHECKING:
    import bentoml

MODEL_FILE = "model.onnx"
SHA256_LABEL = "onnx_sha256"
# Beside the stores' item folders, where BentoML's listing skips it (it lists folders only).
STORE_LOCK = ".mlops-writing.lock"

logger = logging.getLogger(__name__)


class DeploymentError(RuntimeError):
    """A rollout did not complete; the message says what was put back."""


class ServiceUnreachable(DeploymentError):
    """The model service does not answer at all (worth retrying later, unlike a refused model)."""


def model_store_tag(config: PipelineConfig, version: str) -> str:
    return f"{config.model.registered_name}:v{version}"


def save_to_model_store(onnx_bytes: bytes, config: PipelineConfig, version: str, lineage: Mapping[str, str]) -> str:
    """Put the ONNX model into the BentoML model store (BENTOML_HOME) as `<name>:v<version>`; returns the tag.

    Saving the same model again is a no-op; a different model under an existing tag is refused, since a tag
    names one model for good.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = model_store_tag(config, version)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    with writing_to_store("models"):
        try:
            existing = stored_model(tag)
        except NotFound:
            existing = None
        if existing is not None:
            if existing.info.labels.get(SHA256_LABEL) == digest:
                return tag
            raise DeploymentError(f"{tag} is in the BentoML model store already with a different ONNX model")
        labels = {
            **{k: _label(v) for k, v in lineage.items()},
            SHA256_LABEL: digest,
            "task": config.dataset.task,
            "dataset": config.dataset.name,
        }
        metadata: dict[str, Any] = {
            **lineage,
            "inputs": [{"name": f.name, "type": f.type} for f in config.dataset.features],
            "task": config.dataset.task,
            "target": config.dataset.target,
        }
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
            with open(f"{model.path}/{MODEL_FILE}", "wb") as target:
                target.write(onnx_bytes)
    return tag


@contextlib.contextmanager
def writing_to_store(kind: str) -> Generator[None]:
    """Hold the lock of BENTOML_HOME's model store (`kind` "models") or Bento store ("bentos") while writing to
    it, having first removed what a killed write left there.

    BentoML copies an item into its version folder and then rewrites its name's `latest` file in place. A process
    killed in between (a task's SIGKILL, an OOM) leaves a version folder without its model.yaml or bento.yaml, or
    an empty `latest`, and from then on BentoML refuses every read and write of that name ("Failed to load bento
    because it does not contain a 'bento.yaml'"), so a retried deploy would fail for good. The lock (one per
    store, released by the kernel when its holder dies) keeps the cleaning off another process's write in
    progress: every write of this project's tasks and service goes through here.
    """
    from bentoml._internal.configuration.containers import BentoMLContainer

    root = Path(BentoMLContainer.bentoml_home.get()) / kind
    root.mkdir(parents=True, exist_ok=True)
    with open(root / STORE_LOCK, "w") as lock:  # closing it releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_killed_writes(root, "model.yaml" if kind == "models" else "bento.yaml")
        yield


def _remove_killed_writes(root: Path, item_file: str) -> None:
    for name in (folder for folder in root.iterdir() if folder.is_dir()):
        for version in (folder for folder in name.iterdir() if folder.is_dir()):
            if not (version / item_file).is_file():
                logger.warning("removing %s: a write killed before it wrote %s", version, item_file)
                shutil.rmtree(version)
        latest = name / "latest"
        if latest.is_file():
            named = latest.read_text().strip()
            if not named or not (name / named / item_file).is_file():
                # BentoML writes it again from the versions there on its next read.
                logger.warning("removing %s: it names %r, which is not in the store", latest, named)
                latest.unlink()


def stored_model(tag: str) -> bentoml.Model:
    """The model `tag` in the BentoML model store (BENTOML_HOME): exactly that version, or the latest one for a
    tag without a version or with `latest`; raises bentoml's NotFound naming the tag when it is not there."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(tag)
    except NotFound as exc:
        raise NotFound(f"{tag} is not in the BentoML model store") from exc
    # BentoML resolves a version that is not in the store to the one version that starts with it (v1 -> v12),
    # and keeps versions in lower case.
    asked = tag.partition(":")[2].lower()
    if asked not in ("", "latest", model.tag.version):
        raise NotFound(f"{tag} is not in the BentoML model store (BentoML would have given {model.tag})")
    return model


def _label(value: object) -> str:
    """BentoML labels are short strings; lineage values (ids, URIs) fit, anything else is made to."""
    return str(value)[:250]


class ServingEndpoint:
    """One model's routes on the running model service: the service's URL, the token of its admin API, and the
    model (its config's `model.registered_name`)."""

    def __init__(self, url: str, admin_token: str, model: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.model = model
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self.timeout = timeout

    def current_model(self) -> dict[str, Any] | None:
        """What the model's routes serve (`tag`, `model_version`, lineage), or None when nothing yet."""
        response = self._request("GET", f"/admin/models/{self.model}")
        return self._json(response, f"asking the service what {self.model} serves")["serving"]

    def switch_to(self, tag: str) -> dict[str, Any]:
        """Ask the service to load `tag` and swap to it; it refuses a model it cannot load or run."""
        response = self._request("POST", f"/admin/models/{self.model}", json={"tag": tag})
        return self._json(response, f"switching {self.model} to {tag}")

    def rollout(self) -> dict[str, Any] | None:
        """The model's shadow or canary rollout (`tag`, `model_version`, `mode`, `share`, `started_at`, `loaded`),
        or None when none is on."""
        response = self._request("GET", f"/admin/models/{self.model}")
        return self._json(response, f"asking the service about {self.model}'s rollout")["rollout"]

    def start_rollout(self, tag: str, mode: str, share: float) -> dict[str, Any]:
        """Load `tag` beside the champion as a shadow or canary; refused (409) while another rollout is on."""
        body = {"tag": tag, "mode": mode, "share": share if mode == "canary" else None}
        response = self._request("POST", f"/admin/models/{self.model}/rollout", json=body)
        return self._json(response, f"starting a {mode} rollout of {tag}")["rollout"]

    def end_rollout(self) -> None:
        """Unload the challenger of the model's rollout (nothing happens when none is on)."""
        self._json(self._request("DELETE", f"/admin/models/{self.model}/rollout"), f"ending {self.model}'s rollout")

    def ready(self) -> bool:
        try:
            return self._request("GET", f"/models/{self.model}/readyz").status_code == 200
        except DeploymentError:
            return False

    def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        response = self._request("POST", f"/models/{self.model}/predict", json={"records": records})
        return self._json(response, f"predicting with {self.model}")

    def _request(self, method: str, path: str, **kwargs):
        import httpx

        try:
            return httpx.request(method, self.url + path, headers=self._headers, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(f"the model service at {self.url} cannot be reached ({exc})") from exc

    def _json(self, response, doing: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise DeploymentError(
                f"{doing}: the service at {self.url} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json()


# How long a smoke test waits for the service's answers to come from the new model. Behind one address with
# several replicas (compose's --scale, a Kubernetes Service) a request may land on a replica that has not yet
# followed the pointer the switched one wrote: each polls it once a second, then pulls and checks the model.
CONVERGENCE_SECONDS = 30.0


def smoke_test(
    endpoint: ServingEndpoint,
    tag: str,
    records: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    convergence_seconds: float = CONVERGENCE_SECONDS,
) -> None:
    """The live service is ready, serves `tag`, and answers `records` exactly as the offline model does."""
    if not endpoint.ready():
        raise DeploymentError(f"smoke test: {endpoint.url}/models/{endpoint.model}/readyz does not answer 200")
    version = tag.rpartition(":v")[2]
    deadline = time.monotonic() + convergence_seconds
    while str((answer := endpoint.predict(records)).get("model_version")) not in (version, f"v{version}"):
        if time.monotonic() > deadline:
            raise DeploymentError(
                f"smoke test: the service answered with model {answer.get('model_version')}, not {tag}, "
                f"for {convergence_seconds:.0f} s"
            )
        time.sleep(0.5)
    for index, (got, want) in enumerate(zip(answer["predictions"], expected, strict=True)):
        if not _same_prediction(got, want):
            raise DeploymentError(f"smoke test: record {index} got {got} from the service, {want} offline")


def roll_out(
    endpoint: ServingEndpoint, tag: str, records: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> str | None:
    """Switch the service to `tag` and smoke-test it; returns the tag it served before (None: nothing).

    On any failure after the switch was asked for, the service is switched back to what it served before, and
    DeploymentError says what failed and what serves now. ServiceUnreachable before that changes nothing.
    """
    previous = endpoint.current_model()
    previous_tag = previous["tag"] if previous else None
    try:
        endpoint.switch_to(tag)
        smoke_test(endpoint, tag, records, expected)
    except DeploymentError as failure:
        if previous_tag is None:
            raise DeploymentError(f"rollout of {tag} failed: {failure}; no earlier model to put back") from None
        try:
            endpoint.switch_to(previous_tag)
        except DeploymentError as restore_failure:
            raise DeploymentError(
                f"rollout of {tag} failed: {failure}; putting {previous_tag} back failed too: {restore_failure}"
            ) from None
        raise DeploymentError(f"rollout of {tag} failed: {failure}; the service serves {previous_tag} again") from None
    return previous_tag


def offline_predictions(onnx_bytes: bytes, config: PipelineConfig, frame) -> list[dict[str, Any]]:
    """What the service must answer for the rows of `frame`, computed here with onnxruntime."""
    from include.mlops import classes, packaging

    outputs = onnx_outputs(packaging.session(onnx_bytes), config.dataset, frame)
    if config.dataset.task == "regression":
        return [{"value": float(v)} for v in outputs[packaging.VALUE_OUTPUT].reshape(-1)]
    dataset = config.dataset
    keys = [classes.text_of(classes.label_of(c, dataset)) for c in packaging.onnx_classes(onnx_bytes)]
    labels, probabilities = outputs[packaging.LABEL_OUTPUT].reshape(-1), outputs[packaging.PROBABILITIES_OUTPUT]
    return [
        {"label": classes.label_of(label, dataset), "probabilities": dict(zip(keys, map(float, row), strict=True))}
        for label, row in zip(labels, probabilities, strict=True)
    ]


def onnx_outputs(runtime, dataset: Dataset, frame) -> dict[str, Any]:
    """The outputs of the ONNX model in onnxruntime session `runtime` for the rows of `frame`, by output name, fed as
    the parity check and the service feed it (`training.features_of`, then `packaging.onnx_feeds`)."""
    from include.mlops import packaging, training

    names = [output.name for output in runtime.get_outputs()]
    feeds = packaging.onnx_feeds(training.features_of(frame, dataset), dataset)
    return dict(zip(names, runtime.run(None, feeds), strict=True))


def _same_prediction(got: dict[str, Any], want: dict[str, Any], tolerance: float = 1e-6) -> bool:
    if "value" in want:
        return abs(float(got.get("value", float("nan"))) - want["value"]) <= tolerance * max(1.0, abs(want["value"]))
    # A JSON answer's label has its JSON type: `true` is not `1`, nor "1".
    if type(got.get("label")) is not type(want["label"]) or got.get("label") != want["label"]:
        return False
    probabilities = got.get("probabilities") or {}
    return all(
        abs(float(probabilities.get(k, float("nan"))) - v) <= tolerance for k, v in want["probabilities"].items()
    )


def records_of(frame, dataset: Dataset, with_id: bool = False) -> list[dict[str, Any]]:
    """Rows of a validated split as the service's request records: the dataset's features (and its id column
    when `with_id`), JSON types with numbers as their exact doubles, missing values as null."""
    import pandas as pd

    columns = [f.name for f in dataset.features] + ([dataset.id_column] if with_id else [])
    kinds = {f.name: f.type for f in dataset.features} | {dataset.id_column: "categorical"}
    convert = {"numeric": float, "boolean": bool, "categorical": str}
    records = []
    for row in frame[columns].itertuples(index=False):
        record = {}
        for column, value in zip(columns, row, strict=True):
            missing = value is None or value is pd.NA or (isinstance(value, float) and value != value)
            record[column] = None if missing else convert[kinds[column]](value)
        records.append(record)
    return records


def build_bento(model_tag: str, bentofile: Path, build_ctx: Path, labels: Mapping[str, str]) -> str:
    """`bentoml build` of the service in `bentofile` with the model `model_tag` in it, offline; returns the tag.

    The options come from the bentofile (one source for them); the model is added here because it changes with
    every rollout.
    """
    import bentoml
    import yaml

    options = yaml.safe_load(bentofile.read_text())
    service = options.pop("service")
    models = [*options.pop("models", []), model_tag]
    with writing_to_store("bentos"):
        bento = bentoml.bentos.build(
            service,
            models=models,
            labels={**options.pop("labels", {}), **{k: _label(v) for k, v in labels.items()}},
            build_ctx=str(build_ctx),
            **options,
        )
    return str(bento.tag)
