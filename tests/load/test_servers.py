"""The servers mapping file: which server and key variable each scope uses, never a key itself."""

from __future__ import annotations

import json

import pytest

from pipelines.load.rest.servers import ServerConfig, ServerConfigError, ServerMap, normalize_url

SECRET = "ebk_unit_0123456789abcdef0123456789abcdef"


# -- servers mapping -------------------------------------------------------------------------------


def test_servers_file_yaml_by_scope_and_by_tenant_project(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(
        "defaults:\n  url: https://engramia.example.com/v1/\n"
        "scopes:\n"
        "  - scope: acme__asst_coder\n    api_key_env: KEY_CODER\n"
        "  - tenant: acme\n    project: asst_support\n"
        "    url: http://127.0.0.1:8100\n    api_key_env: KEY_SUPPORT\n"
    )
    servers = ServerMap.load(path)
    coder = servers.for_scope("acme__asst_coder", "acme", "asst_coder")
    assert coder == ServerConfig("https://engramia.example.com", "KEY_CODER")
    assert servers.for_scope("acme__asst_support", "acme", "asst_support").url == "http://127.0.0.1:8100"
    with pytest.raises(ServerConfigError, match="no Engramia server configured for scope acme__other"):
        servers.for_scope("acme__other", "acme", "other")
    (tmp_path / "servers.json").write_text(
        json.dumps([{"scope": "s", "url": "http://h:1", "api_key_env": "K"}])
    )
    assert ServerMap.load(tmp_path / "servers.json").for_scope("s", "t", "p").url == "http://h:1"


def test_servers_file_refuses_keys_and_bad_urls_without_echoing_them(tmp_path):
    path = tmp_path / "servers.yaml"
    path.write_text(f"scopes:\n  - scope: s\n    url: http://h\n    api_key: {SECRET}\n")
    with pytest.raises(ServerConfigError) as info:
        ServerMap.load(path)
    assert "api_key_env" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(ServerConfigError) as info:
        ServerConfig(f"https://user:{SECRET}@engramia.example.com", "K")
    assert SECRET not in str(info.value)
    with pytest.raises(ServerConfigError) as info:
        ServerConfig("http://h", SECRET.replace("_", "-"))  # the key itself passed as the variable name
    assert SECRET.replace("_", "-") not in str(info.value)
    assert normalize_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert normalize_url("https://x.example.com/engramia/v1") == "https://x.example.com/engramia"
