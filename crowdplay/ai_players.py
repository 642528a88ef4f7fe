"""The AI side of a game's lineup: the policies load while the game waits, a seat handed to AI gets
its own ``PolicyAgent``, and each policy's answering is watched. A policy that has played nothing
but substitutes for ``EnvSpec.ai_unavailable_after_s`` is *unavailable*: the participants hear of
it once, and once when it is back, or (``EnvSpec.ai_unavailable = "end"``) the game ends with the
reason."""

from __future__ import annotations

from collections.abc import Iterable

from crowdplay import protocol
from crowdplay.ai.agent import PolicyAgent
from crowdplay.ai.remote import PolicyClient
from crowdplay.realtime import LiveEnv


class AIPlayers:
    """Hands a game's agents to AI and watches whether their policies answer."""

    def __init__(self, live: LiveEnv, client: PolicyClient | None) -> None:
        """``client``: where the policies run (None: inside this process)."""
        self.live = live
        self.client = client
        #: the AI agents whose policy the participants were told is unavailable
        self.unavailable: set[str] = set()

    def prepare(self) -> None:
        """Load every policy the game may need (always-AI agents and fallbacks) while it waits."""
        spec = self.live.spec
        if self.client is not None:
            for agent, policy_id in {**spec.ai_agent_map_fallback, **spec.ai_agent_map_always}.items():
                self.client.prepare(policy_id, int(self.live.adapter.action_space(agent).n))

    def hand(self, agent: str, policy_id: str) -> PolicyAgent:
        """``policy_id`` plays ``agent`` from the next tick."""
        adapter = self.live.adapter
        policy = PolicyAgent(policy_id, adapter.action_space(agent), adapter.keymaps[agent].noop, self.client, agent)
        self.live.set_controller(agent, policy.controller, policy)
        return policy

    def check(self, policies: Iterable[tuple[str, PolicyAgent]]) -> tuple[str | None, list[str]]:
        """Why the game must end now (None: it plays on), and the ``player`` messages telling the
        participants which policies became unavailable or came back since the last check."""
        spec, messages = self.live.spec, []
        for agent, policy in policies:
            reason = policy.unavailable(spec.ai_unavailable_after_s)
            if reason is not None and spec.ai_unavailable == "end":
                return f"the AI playing {agent} ({policy.policy_id}) is unavailable: {reason}", []
            if reason is not None and agent not in self.unavailable:
                self.unavailable.add(agent)
                messages.append(protocol.text("player", agent=agent, status="ai_unavailable", policy=policy.policy_id, reason=reason))
            elif reason is None and agent in self.unavailable and policy.substitute is None:
                self.unavailable.discard(agent)
                messages.append(protocol.text("player", agent=agent, status="ai_back", policy=policy.policy_id))
        return None, messages
