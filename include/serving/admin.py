"""The admin API, mounted at /admin: what each model serves, switching it, and rollouts (bearer token).

`admin_api(token, server)` builds it for one service; `server()` answers the service instance (made in the
worker once the app starts). The request gate checks the token before anything reads a body
(`authorizes(token)`); the endpoints check it again, so the API is safe without the gate too.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and those naming the
# dependencies made inside admin_api cannot be resolved from strings.
import datetime as dt
import hmac
from collections.abc import Callable
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from include.serving.models import ModelNotFound, ModelRejected
from include.serving.rollout import ModelSlot, RolloutPlan, RolloutRefused

TOKEN_REQUIRED = "a valid admin bearer token is required"


class ModelInfo(BaseModel):
    tag: str
    model_name: str
    model_version: str
    labels: dict[str, str] = Field(description="the lineage labels of the model store entry")
    loaded_at: dt.datetime


class RolloutInfo(BaseModel):
    tag: str = Field(description="the challenger")
    model_version: str
    mode: str
    share: float = Field(description="of requests the challenger answers (0 in a shadow rollout)")
    started_at: str
    loaded: bool = Field(description="false when the recorded challenger no longer loads (the rollout is void)")


class ModelStatus(BaseModel):
    model: str = Field(description="the model (its config's model.registered_name)")
    serving: ModelInfo | None = Field(description="what its routes serve; null before a model is switched to")
    rollout: RolloutInfo | None = Field(default=None, description="the challenger on trial beside it, if any")


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="a model in the BentoML model store", examples=["fraud_detector:v4"])


class SwitchResult(BaseModel):
    tag: str
    model_version: str
    previous_tag: str | None


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="the challenger, a model in the BentoML model store", examples=["fraud_detector:v5"])
    mode: str = Field(description="shadow or canary", examples=["shadow"])
    share: float | None = Field(
        default=None, description="canary: the share of requests the challenger answers, above 0 and below 1"
    )


class ServedModels(Protocol):
    """What the admin API needs of the service: its models' slots, and counting switches."""

    slots: dict[str, ModelSlot]

    def count_switch(self, model: str, outcome: str) -> None: ...


def authorizes(token: str | None) -> Callable[[str], bool]:
    """Whether an Authorization header value carries `token` (never, without a token)."""
    expected = (token or "").encode()

    def authorized(authorization: str) -> bool:
        scheme, _, given = authorization.partition(" ")
        # compare_digest takes as long whatever matches, so the token cannot be guessed byte by byte from timings.
        return (
            bool(expected)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(errors="replace"), expected)
        )

    return authorized


def admin_api(token: str | None, server: Callable[[], ServedModels]) -> FastAPI:
    admin = FastAPI(title="Model admin", description="What each model serves, and switching it (bearer token).")
    bearer = HTTPBearer(auto_error=False, description="MLOPS_ADMIN_TOKEN")
    authorized = authorizes(token)

    def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> None:
        if credentials is None or not authorized(f"Bearer {credentials.credentials}"):
            raise HTTPException(401, TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})

    def slot_of(model: str) -> ModelSlot:
        slots = server().slots
        if model not in slots:
            raise HTTPException(404, f"no model {model!r} on this service; its models are: {', '.join(slots)}")
        return slots[model]

    Slot = Annotated[ModelSlot, Depends(slot_of)]
    admitted = [Depends(require_admin)]

    @admin.get("/models", dependencies=admitted)
    def served_models() -> list[ModelStatus]:
        """What every model's routes serve, with the lineage labels of the model store entries."""
        return [status_of(slot) for slot in server().slots.values()]

    @admin.get("/models/{model}", dependencies=admitted, responses={404: {"description": "no such model"}})
    def served_model(slot: Slot) -> ModelStatus:
        """What one model's routes serve, with the lineage labels of its model store entry."""
        return status_of(slot)

    @admin.post(
        "/models/{model}",
        dependencies=admitted,
        responses={
            404: {"description": "no such model, or the tag is not in the model store"},
            422: {"description": "the tag is another model's, or the model cannot serve"},
        },
    )
    def switch_model(slot: Slot, body: SwitchRequest) -> SwitchResult:
        """Load the model `tag` from the store, check it, and switch every worker's route of `model` to it without
        downtime; the other models are not touched."""
        try:
            served, previous = slot.switch(body.tag)
        except ModelNotFound as exc:
            server().count_switch(slot.name, "not_found")
            raise HTTPException(404, str(exc)) from None
        except ModelRejected as exc:
            server().count_switch(slot.name, "rejected")
            raise HTTPException(422, str(exc)) from None
        server().count_switch(slot.name, "switched")
        return SwitchResult(tag=served.tag, model_version=served.version, previous_tag=previous)

    @admin.post(
        "/models/{model}/rollout",
        dependencies=admitted,
        responses={
            404: {"description": "no such model, or the tag is not in the model store"},
            409: {"description": "a rollout of this model is on already, or it serves no champion yet"},
            422: {"description": "a bad mode or share, or a challenger that cannot serve (the champion is untouched)"},
        },
    )
    def start_rollout(slot: Slot, body: RolloutRequest) -> ModelStatus:
        """Load the challenger `tag` beside the model's champion, in `shadow` mode (it scores every request off
        the request path; the champion answers) or `canary` mode (it answers `share` of the requests). One
        rollout per model; it is recorded, so a restarted service resumes it."""
        try:
            slot.start_rollout(body.tag, body.mode, 0.0 if body.share is None else body.share)
        except RolloutRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except ModelNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ModelRejected as exc:
            raise HTTPException(422, str(exc)) from None
        return status_of(slot)

    @admin.delete("/models/{model}/rollout", dependencies=admitted)
    def end_rollout(slot: Slot) -> ModelStatus:
        """End the model's rollout, if one is on: the challenger is unloaded and the champion serves alone. To
        promote the challenger instead, switch the model to its tag (POST /admin/models/{model})."""
        slot.end_rollout()
        return status_of(slot)

    return admin


def status_of(slot: ModelSlot) -> ModelStatus:
    served = slot.served
    info = None
    if served is not None:
        info = ModelInfo(
            tag=served.tag,
            model_name=served.name,
            model_version=served.version,
            labels=dict(served.labels),
            loaded_at=served.loaded_at,
        )
    rollout = slot.rollout
    plan: RolloutPlan | None = rollout.plan if rollout else slot.pointer.read_state()[1]
    on_trial = None
    if plan is not None:
        on_trial = RolloutInfo(
            tag=plan.tag,
            model_version=plan.tag.rpartition(":v")[2],
            mode=plan.mode,
            share=plan.share,
            started_at=plan.started_at,
            loaded=rollout is not None,
        )
    return ModelStatus(model=slot.name, serving=info, rollout=on_trial)
