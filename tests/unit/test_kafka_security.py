"""librdkafka settings for mutual TLS and SASL OAUTHBEARER (secrets from env vars only)."""

from __future__ import annotations

import pytest

from pipeline.kafka import kafka_settings
from schemas.config import parse_config
from schemas.errors import ConfigError


def settings(**security):
    return kafka_settings(parse_config({"kafka": {"security": security}}).kafka)


def test_mutual_tls_from_strimzi_user_secret_files():
    assert settings(protocol="SSL", ca_file="/etc/kafka/ca.crt", cert_file="/etc/kafka-user/user.crt",
                    key_file="/etc/kafka-user/user.key") == {
        "security.protocol": "SSL", "ssl.ca.location": "/etc/kafka/ca.crt",
        "ssl.certificate.location": "/etc/kafka-user/user.crt", "ssl.key.location": "/etc/kafka-user/user.key"}


@pytest.mark.parametrize("security", [
    {"protocol": "SSL", "cert_file": "/c"},  # no key
    {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "cert_file": "/c", "key_file": "/k"},  # no TLS
])
def test_mutual_tls_needs_cert_key_and_tls(security):
    with pytest.raises(ConfigError, match="mutual TLS needs both cert_file and key_file"):
        settings(**security)


def test_oauthbearer_oidc_client_credentials_from_env(monkeypatch):
    monkeypatch.setenv("K_ID", "veil-sink")
    monkeypatch.setenv("K_SECRET", "s3cr3t")
    out = settings(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                   oauth={"token_endpoint_url": "https://idp/token", "client_id_env": "K_ID",
                          "client_secret_env": "K_SECRET", "scope": "kafka"})
    assert out == {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
                   "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.token.endpoint.url": "https://idp/token",
                   "sasl.oauthbearer.client.id": "veil-sink", "sasl.oauthbearer.client.secret": "s3cr3t",
                   "sasl.oauthbearer.scope": "kafka"}
    monkeypatch.delenv("K_SECRET")
    with pytest.raises(ConfigError, match="oauth.client_secret_env: OAUTHBEARER needs .*set K_SECRET"):
        settings(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                 oauth={"token_endpoint_url": "https://idp/token", "client_id_env": "K_ID",
                        "client_secret_env": "K_SECRET"})
    with pytest.raises(ConfigError, match="token_endpoint_url: required"):
        settings(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER")
