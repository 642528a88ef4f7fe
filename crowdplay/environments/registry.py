"""The registry of environments a deployment offers, looked up by id."""

from __future__ import annotations

from crowdplay.environments.spec import EnvSpec


class UnknownEnvironment(KeyError):
    """Raised for an environment id that nobody registered."""

    def __init__(self, env_id: str) -> None:
        super().__init__(env_id)
        self.env_id = env_id

    def __str__(self) -> str:
        return f"unknown environment {self.env_id!r}"


_REGISTRY: dict[str, EnvSpec] = {}


def register_env(spec: EnvSpec) -> EnvSpec:
    """Add an environment; ids are unique so a typo cannot silently shadow a game."""
    if spec.id in _REGISTRY and _REGISTRY[spec.id] is not spec:
        raise ValueError(f"environment id {spec.id!r} is already registered")
    _REGISTRY[spec.id] = spec
    return spec


def get_env(env_id: str) -> EnvSpec:
    """The registered spec for ``env_id``; UnknownEnvironment if there is none."""
    try:
        return _REGISTRY[env_id]
    except KeyError:
        raise UnknownEnvironment(env_id) from None


def list_envs() -> list[EnvSpec]:
    """Every registered environment, in registration order (the game library)."""
    return list(_REGISTRY.values())
