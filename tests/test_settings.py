"""Settings: the environment is read in one place; bad values name their variable."""

from __future__ import annotations

import pytest

from evaljail import Settings
from evaljail.errors import ConfigurationError
from evaljail.policy import Policy, Profile


def test_defaults_are_the_documented_ones() -> None:
    s = Settings.from_env({})
    assert (s.pool_min_size, s.pool_max_size, s.host, s.port) == (3, 15, "127.0.0.1", 9999)
    assert (s.timeout_ms, s.memory_mb, s.isolation) == (5000, 50, "strict")
    assert s.is_loopback


def test_values_are_parsed() -> None:
    s = Settings.from_env({
        "PYTHON_POOL_MIN_SIZE": "1", "PYTHON_POOL_MAX_SIZE": "4", "EVALJAIL_PORT": "8080",
        "EVALJAIL_ALLOWED_IMPORTS": "sklearn, nltk", "EVALJAIL_ISOLATION": "degraded",
        "PYTHON_EXECUTOR_URL": "http://127.0.0.1:9999/",
    })  # fmt: skip
    assert (s.pool_min_size, s.pool_max_size, s.port) == (1, 4, 8080)
    assert s.allowed_imports == ("sklearn", "nltk")
    assert s.executor_url == "http://127.0.0.1:9999"
    assert s.isolation == "degraded"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PYTHON_POOL_MIN_SIZE": "many"}, "PYTHON_POOL_MIN_SIZE"),
        ({"PYTHON_POOL_MAX_SIZE": "0"}, "PYTHON_POOL_MAX_SIZE"),
        ({"PYTHON_POOL_MIN_SIZE": "9", "PYTHON_POOL_MAX_SIZE": "3"}, "PYTHON_POOL_MIN_SIZE"),
        ({"EVALJAIL_PORT": "70000"}, "EVALJAIL_PORT"),
        ({"EVALJAIL_HOST": "example.com"}, "EVALJAIL_HOST"),
        ({"EVALJAIL_TIMEOUT_MS": "-5"}, "EVALJAIL_TIMEOUT_MS"),
        ({"EVALJAIL_TIMEOUT_MS": "60000"}, "EVALJAIL_TIMEOUT_MS"),
        ({"EVALJAIL_MEMORY_MB": "1"}, "EVALJAIL_MEMORY_MB"),
        ({"EVALJAIL_ALLOWED_IMPORTS": "os;rm"}, "EVALJAIL_ALLOWED_IMPORTS"),
        ({"EVALJAIL_API_TOKEN": "short"}, "EVALJAIL_API_TOKEN"),
        ({"EVALJAIL_ISOLATION": "none"}, "EVALJAIL_ISOLATION"),
        ({"PYTHON_EXECUTOR_URL": "ftp://x"}, "PYTHON_EXECUTOR_URL"),
        ({"EVALJAIL_SANDBOX_DISK_MB": "1"}, "EVALJAIL_SANDBOX_DISK_MB"),
        ({"EVALJAIL_SANDBOX_MAX_RUNNING": "0"}, "EVALJAIL_SANDBOX_MAX_RUNNING"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    assert variable in info.value.message
    assert info.value.details["variable"] == variable


def test_policy_from_settings_keeps_always_blocked_modules_blocked() -> None:
    with pytest.raises(ConfigurationError, match="always blocked"):
        Policy.from_settings(Settings(allowed_imports=("os",)))
    sci = Policy.from_settings(Settings(scientific_memory_mb=300), profile=Profile.SCIENTIFIC)
    assert {"numpy", "pandas", "matplotlib"} <= sci.allowed_imports
    assert sci.limits.memory_bytes == 300 * 1024 * 1024
    assert not Policy().allows_import("numpy")


def test_sandbox_limits_come_from_the_environment() -> None:
    from evaljail.sandboxes import SandboxLimits, SandboxNamespace

    settings = Settings.from_env({
        "EVALJAIL_SANDBOX_MAX": "3", "EVALJAIL_SANDBOX_DISK_MB": "4096",
        "EVALJAIL_SANDBOX_MEMORY_MB": "256", "EVALJAIL_SANDBOX_MAX_RUNNING": "5",
    })  # fmt: skip
    namespace = SandboxNamespace.from_settings(settings)
    try:
        limits = namespace.limits
        assert (limits.max_sandboxes, limits.max_running_commands) == (3, 5)
        assert limits.disk_bytes == limits.total_disk_bytes == 4096 * 1024 * 1024
        assert limits.memory_bytes == 256 * 1024 * 1024
    finally:
        namespace.close()
    defaults = SandboxNamespace.from_settings(Settings())
    try:
        assert defaults.limits == SandboxLimits()  # the settings' defaults are the library's
    finally:
        defaults.close()
