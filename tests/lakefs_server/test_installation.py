"""The installation-level calls: health, setup state, configuration, the current user, authentication."""

from __future__ import annotations

import httpx
import lakefs
import lakefs_sdk
import pytest

from tests.lakefs_server.support import message_of

pytestmark = pytest.mark.contract


def test_healthcheck_answers_anonymously(lakefs_server):
    assert httpx.get(f"{lakefs_server.url}/api/v1/healthcheck").status_code == 204
    lakefs_server.client().sdk_client.health_check_api.health_check()


def test_setup_state_is_initialized_and_setup_refuses_a_second_time(lakefs_server):
    internal = lakefs_server.client().sdk_client.internal_api
    assert internal.get_setup_state().state == "initialized"
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        internal.setup(lakefs_sdk.Setup(username="someone"))
    assert refused.value.status == 409


@pytest.mark.filterwarnings("ignore:GET /config/.* is deprecated:DeprecationWarning")
def test_config_describes_a_local_blockstore_the_high_level_client_accepts(lakefs_server):
    client = lakefs_server.client()
    config = client.sdk_client.config_api.get_config()
    assert config.version_config.version
    assert config.storage_config.blockstore_type in ("local", "s3", "gs", "azure", "mem")
    assert config.storage_config_list and config.storage_config_list[0].blockstore_type
    # What lakefs.Client reads before any object I/O.
    assert client.storage_config.pre_sign_support in (True, False)
    assert client.version == config.version_config.version
    internal = client.sdk_client.internal_api
    assert internal.get_lake_fs_version().version == config.version_config.version
    assert internal.get_storage_config().blockstore_type == config.storage_config.blockstore_type


def test_current_user(lakefs_server):
    user = lakefs_server.client().sdk_client.auth_api.get_current_user().user
    assert user.id and user.creation_date > 0


def test_wrong_or_missing_credentials_answer_401(lakefs_server):
    wrong = lakefs.Client(host=lakefs_server.url, username=lakefs_server.access_key_id, password="wrong")
    with pytest.raises(lakefs.exceptions.NotAuthorizedException) as refused:
        list(lakefs.repositories(client=wrong))
    assert refused.value.status_code == 401
    assert message_of(refused.value) == "error authenticating request"
    with pytest.raises(lakefs_sdk.ApiException) as refused_config:
        wrong.sdk_client.config_api.get_config()
    assert refused_config.value.status == 401
    anonymous = httpx.get(f"{lakefs_server.url}/api/v1/repositories")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"message": "error authenticating request"}


def test_login_token_works_as_bearer_and_as_cookie(lakefs_server):
    auth_api = lakefs_server.client().sdk_client.auth_api
    token = auth_api.login(
        lakefs_sdk.LoginInformation(
            access_key_id=lakefs_server.access_key_id, secret_access_key=lakefs_server.secret_access_key
        )
    )
    assert token.token and token.token_expiration > 0
    by_token = lakefs.Client(host=lakefs_server.url, access_token=token.token)
    assert by_token.sdk_client.auth_api.get_current_user().user.id
    if lakefs_server.is_local:  # a real lakeFS keeps the token in a signed session cookie instead
        # The SDK sends the api_key value as the whole Cookie header: it must carry the cookie's name.
        cookie = f"internal_auth_session={token.token}"
        cookie_only = lakefs_sdk.Configuration(host=f"{lakefs_server.url}/api/v1", api_key={"cookie_auth": cookie})
        with lakefs_sdk.ApiClient(cookie_only) as api_client:
            assert lakefs_sdk.AuthApi(api_client).get_current_user().user.id
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        auth_api.login(lakefs_sdk.LoginInformation(access_key_id=lakefs_server.access_key_id, secret_access_key="no"))
    assert refused.value.status == 401
