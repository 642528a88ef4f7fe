"""Checks before participants arrive (``crowdplay check``).

A deployment's mistakes should reach the researcher at their desk, not a participant mid-game:
a checkpoint path with a typo, a module id the checkpoint does not hold, a model trained on
another game's action set or on other observations than the framebuffer makes, a policy asking
for more CPUs than any node has. So every registered environment is built once and reset, and
each policy that plays one of its agents (``ai_agent_map_always`` or ``ai_agent_map_fallback``)
is loaded as its policy actor would load it, shown the agent's real first observation through
its framebuffer, and asked for one action. Registered policies no environment uses are loaded.

Nothing here touches Ray: ``resources`` (what the largest node has) is given by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from crowdplay.ai.agent import policy_observation
from crowdplay.ai.answers import checked_action, one_line
from crowdplay.ai.registry import Policy, compute_batch, make_framebuffer, make_policy, policy_class, registered_policies
from crowdplay.environments import EnvSpec, list_envs, make_adapter

#: The seed each environment is reset with for its check.
CHECK_SEED = 0


@dataclass
class Verdict:
    """What one check found: ``problems`` (none: it passed) and ``details`` worth reading either way."""

    subject: str
    problems: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the check passed (no problems)."""
        return not self.problems

    def lines(self) -> list[str]:
        """The verdict as printed: a head line, then its details and problems indented."""
        head = f"{'ok  ' if self.ok else 'FAIL'}  {self.subject}"
        return [head, *(f"        {detail}" for detail in self.details), *(f"      ! {problem}" for problem in self.problems)]


def resource_problems(policy_id: str, largest: Mapping[str, float]) -> list[str]:
    """A policy actor asking for more of a resource than the largest node has is never placed."""
    cls = policy_class(policy_id)
    if not cls.in_actor:
        return []
    asked = {"CPU": float(cls.num_cpus), "GPU": float(cls.num_gpus)}
    return [
        f"its actor asks for {name} {amount:g} but the largest node has {name} {largest.get(name, 0.0):g}"
        for name, amount in asked.items()
        if amount > largest.get(name, 0.0)
    ]


def asks(policy_id: str) -> str:
    """What the policy asks of the cluster (actors and resources), for ``crowdplay check``'s details."""
    cls = policy_class(policy_id)
    if not cls.in_actor:
        return "runs inside each game's process"
    gpus = f", GPU {cls.num_gpus:g}" if cls.num_gpus else ""
    return f"{cls.replicas} actor(s) of CPU {cls.num_cpus:g}{gpus}"


def check_environment(spec: EnvSpec) -> tuple[Verdict, Any]:
    """Build and reset the environment; the verdict, and its adapter when it could be built."""
    verdict = Verdict(f"environment {spec.id!r}")
    try:
        adapter = make_adapter(spec)
        adapter.reset(CHECK_SEED, dict(spec.reset_options) if spec.reset_options is not None else None)
        adapter.screen()  # what the participant's page shows: a render_mode other than "rgb_array" fails here
    except Exception as error:
        verdict.problems.append(f"could not be built, reset and shown: {one_line(error)}")
        return verdict, None
    actions = {agent: int(adapter.action_space(agent).n) for agent in adapter.agents}
    verdict.details.append(f"agents {', '.join(f'{agent} ({count} actions)' for agent, count in actions.items())}")
    return verdict, adapter


def ai_seats(spec: EnvSpec) -> Iterator[tuple[str, str, str]]:
    """(agent, policy id, which option) for every policy that may play one of the env's agents."""
    for option in ("ai_agent_map_always", "ai_agent_map_fallback"):
        for agent, policy_id in getattr(spec, option).items():
            yield agent, policy_id, option


def check_seat(spec: EnvSpec, adapter: Any, agent: str, policy_id: str, option: str, largest: Mapping[str, float]) -> Verdict:
    """Load the policy for the agent's action space, show it the agent's first observation
    through its framebuffer, and ask it one action."""
    verdict = Verdict(f"policy {policy_id!r} for {spec.id}/{agent} ({option})", resource_problems(policy_id, largest), [asks(policy_id)])
    action_space = adapter.action_space(agent)
    try:
        policy: Policy = make_policy(policy_id, action_space)
        verdict.problems += policy.problems()
    except Exception as error:
        verdict.problems.append(f"could not be loaded: {one_line(error)}")
        return verdict
    verdict.details += [f"{name}: {value}" for name, value in policy.describe().items()]
    palette = adapter.palette

    def rgb() -> Any:
        screen = adapter.screen()
        return palette[screen] if palette is not None else screen

    try:
        observation = policy_observation(adapter, policy.observation, agent, rgb)
        framebuffer = make_framebuffer(policy_id)
        policy_input = framebuffer.push(observation) if framebuffer is not None else observation
    except Exception as error:
        verdict.problems.append(f"its framebuffer could not take the agent's observation: {one_line(error)}")
        return verdict
    shape = getattr(policy_input, "shape", None)
    verdict.details.append(f"input: {policy.observation} observation" + (f" -> shape {tuple(shape)} {policy_input.dtype}" if shape is not None else ""))
    problem = policy.input_problem(policy_input)
    if problem is not None:
        verdict.problems.append(problem)
        return verdict
    try:
        answer = checked_action(compute_batch(policy, [policy_input], ["crowdplay-check"])[0], int(action_space.n))
    except Exception as error:
        verdict.problems.append(f"raised when asked for an action: {one_line(error)}")
        return verdict
    if isinstance(answer, str):
        verdict.problems.append(answer)
    else:
        labels = getattr(adapter, "action_labels", {}).get(agent) or []
        verdict.details.append(f"answered action {answer}" + (f" ({labels[answer]})" if answer < len(labels) else "") + f" of {int(action_space.n)}")
    return verdict


def check_unused_policy(policy_id: str, largest: Mapping[str, float]) -> Verdict:
    """A policy no environment names: only that it can be constructed (no action space to fit)."""
    verdict = Verdict(f"policy {policy_id!r} (no environment uses it)", resource_problems(policy_id, largest), [asks(policy_id)])
    cls = policy_class(policy_id)
    if getattr(cls, "checkpoint", None) is not None:  # an RLlib checkpoint: it must load
        try:
            verdict.details += [f"{name}: {value}" for name, value in cls().describe().items()]
        except Exception as error:
            verdict.problems.append(f"could not be loaded: {one_line(error)}")
    return verdict


def check_everything(largest: Mapping[str, float]) -> list[Verdict]:
    """Every registered environment, each policy seat in it, then the policies no env uses."""
    verdicts: list[Verdict] = []
    used: set[str] = set()
    for spec in list_envs():
        verdict, adapter = check_environment(spec)
        verdicts.append(verdict)
        for agent, policy_id, option in ai_seats(spec):
            used.add(policy_id)
            if adapter is not None:
                verdicts.append(check_seat(spec, adapter, agent, policy_id, option, largest))
        if adapter is not None:
            adapter.close()
    verdicts += [check_unused_policy(policy_id, largest) for policy_id in registered_policies() if policy_id not in used]
    return verdicts
