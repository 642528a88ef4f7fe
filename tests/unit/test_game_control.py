"""How games end, are watched and are lost (``GameControl``), and a participant's Start
(``Arrivals``), over fake game processes (no Ray)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from crowdplay.admission import Admission, TooManyStarts
from crowdplay.arrivals import Arrivals, StartWithdrawn
from crowdplay.assignments import ANONYMOUS, Assignment, SessionLost
from crowdplay.background import Background
from crowdplay.controllers import Human
from crowdplay.environments import EnvSpec, register_env
from crowdplay.game_control import HOST_LOST, GameControl, NotAIOnly, UnknownGame
from crowdplay.hosts import HostPool, PoolLimits
from crowdplay.matchmaking import Matchmaker
from crowdplay.problem_reports import ProblemReports
from crowdplay.session_table import AI_PLAYED, SessionTable, resume_secret
from tests.unit.fakes import FakeGameHosts, FakeLauncher

PAIR = register_env(EnvSpec(id="UnitControlPair", title="Pair", description="Two seats.", make_env=lambda: None, agents=("left", "right")))
AI_ONLY = register_env(EnvSpec(id="UnitControlAI", title="AI", description="Agents learnt when it opens.", make_env=lambda: None))
KEY = b"k" * 32


class Parts:
    """The manager's Ray-free parts wired as the manager wires them, over fake processes."""

    def __init__(self, humans: list[str]) -> None:
        background = Background(logging.getLogger("test"))
        self.hosts = FakeGameHosts(humans)
        self.table = SessionTable()
        self.pool = HostPool(FakeLauncher(["a"]), PoolLimits(1, 4, 0, 0.0), background, on_added=lambda host: self.games.watch_host(host))
        self.interrupted: list[tuple[str, str]] = []
        self.games = GameControl(self.table, self.pool, self.hosts, background, lambda env_id: self.matchmaker.new_game(env_id), self.mark_interrupted)
        self.matchmaker = Matchmaker(self.table, self.pool, self.hosts, ProblemReports(), self.games.host_lost, self.games.end_if_nobody_comes)

    async def mark_interrupted(self, game_id: str, reason: str, status: str = "interrupted") -> None:
        self.interrupted.append((game_id, reason))

    async def seat(self, session_id: str) -> Any:
        return await self.matchmaker.seat(PAIR, session_id, Human(), {"participant": f"p-{session_id}"})


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_an_ended_game_leaves_the_table_and_its_process_is_told_with_the_reason():
    async def scenario():
        parts = Parts(["left", "right"])
        entry = await parts.seat("s1")
        await parts.games.end_of_session("s1", "the researcher ended this session")
        await parts.games.end_of_session("s1", "again")  # an ended session's game is not ended twice
        return parts, entry

    parts, entry = asyncio.run(scenario())
    assert parts.hosts.stopped == [(entry.game.game_id, "the researcher ended this session")]
    assert not parts.table.games and not parts.table.sessions and not entry.game.host.games


def test_a_game_whose_process_is_found_dead_when_ended_is_lost_and_marked_interrupted():
    async def scenario():
        parts = Parts(["left", "right"])
        entry = await parts.seat("s1")
        parts.hosts.dead.add(entry.game.host.actor)
        await parts.games.end(entry.game.game_id, "over")
        await settle()
        return parts, entry

    parts, entry = asyncio.run(scenario())
    assert entry.game.host not in parts.pool.hosts and parts.hosts.stopped == []
    # the game was dropped before its process was found dead: nothing of it was left to mark
    assert parts.interrupted == []


def test_a_process_dying_ends_its_games_tells_their_participants_why_and_marks_them_interrupted():
    async def scenario():
        parts = Parts(["left", "right"])
        entry = await parts.seat("s1")
        parts.hosts.kill(entry.game.host.actor)
        await settle()
        return parts, entry

    parts, entry = asyncio.run(scenario())
    assert parts.interrupted == [(entry.game.game_id, HOST_LOST)] and entry.game.host not in parts.pool.hosts
    with pytest.raises(SessionLost, match="stopped unexpectedly"):
        parts.table.check("s1", entry.token)


def test_a_game_no_process_can_open_without_a_build_behind_play_is_opened_with_leave_to_build_there():
    async def scenario():
        parts = Parts(["left", "right"])
        parts.pool.launcher = FakeLauncher(["a"], capacity=1)  # no second process can boot
        first = await parts.seat("s1")
        await parts.seat("s2")
        parts.pool.game_began(first.game.host)
        third = await parts.seat("s3")  # a new game: its only place is behind the first game
        return parts, first, third

    parts, first, third = asyncio.run(scenario())
    assert third.game.host is first.game.host and third.game.game_id != first.game.game_id
    assert parts.hosts.behind_play == [third.game.game_id]  # told to build it rather than refuse (WouldStall)


def test_game_events_release_seats_and_give_an_ended_games_slot_back():
    async def scenario():
        parts = Parts(["left", "right"])
        first, _ = await parts.seat("s1"), await parts.seat("s2")
        game = first.game
        released = {"event": "seat_released", "agent": first.agent, "session_id": "s1", "reopened": False, "statistics": {"episodes": 1}}
        departed = parts.games.event(game.game_id, released)
        seat, load = game.seats[first.agent], set(game.host.games)
        ended = parts.games.event(game.game_id, {"event": "ended", "statistics": {"s2": {}}})
        return parts, game, departed, seat, load, ended

    parts, game, departed, seat, load, ended = asyncio.run(scenario())
    assert departed == {"s1": {"episodes": 1}} and seat is AI_PLAYED and load == {game.game_id}
    assert ended == {"s2": {}} and not game.host.games and not parts.table.games


def test_a_participants_statistics_are_asked_of_their_game_and_none_once_they_left():
    async def scenario():
        parts = Parts(["left", "right"])
        await parts.seat("s1")
        playing = await parts.games.ask("s1", "statistics")
        finished = await parts.games.ask("s1", "finish")
        gone = await parts.games.ask("nobody", "statistics")
        return parts, playing, finished, gone

    parts, playing, finished, gone = asyncio.run(scenario())
    assert playing == finished == {"values": {"score": 1.0}} and gone == {}
    assert parts.hosts.asked == [("s1", False), ("s1", True)]


def test_an_ai_only_game_starts_unwatched_and_one_people_play_is_refused():
    async def scenario():
        parts = Parts([])
        started = await parts.games.start_ai_game(AI_ONLY.id)
        info, channel = await parts.games.watch(started["game_id"])
        with pytest.raises(UnknownGame):
            await parts.games.watch("no-such-game")
        with pytest.raises(NotAIOnly):
            await parts.games.start_ai_game(PAIR.id)
        people = Parts(["left"])
        with pytest.raises(NotAIOnly):
            await people.games.start_ai_game(AI_ONLY.id)  # its agents, learnt as it opened, are people's
        return parts, people, started, channel

    parts, people, started, channel = asyncio.run(scenario())
    assert parts.hosts.unwatched == [started["game_id"]] and channel["watch"] == "dashboard"
    assert [reason for _, reason in people.hosts.stopped] == ["not an AI-only game"] and not people.table.games


def test_shutdown_ends_every_game_and_drains_every_process():
    async def scenario():
        parts = Parts(["left"])
        await parts.seat("s1")
        await parts.seat("s2")
        return parts, await parts.games.shutdown("bye", 1.0)

    parts, ended = asyncio.run(scenario())
    assert ended == 2 and [reason for _, reason in parts.hosts.stopped] == ["bye"]  # both in one game
    assert not parts.table.games and parts.hosts.drained


class FakeStudy:
    """The parts of ``StudyService`` a Start uses: every task open, pseudonyms by prefix."""

    def __init__(self) -> None:
        self.book = self
        self.assignments: dict[str, Assignment] = {}
        self.saved: list[str] = []

    async def open_task(self, env_id: str) -> str:
        return env_id

    async def pseudonym(self, raw_id: str) -> str:
        return f"pseudonym-{raw_id}"

    async def secret_key(self) -> bytes:
        return KEY

    def open(self, session_id: str, task_id: str, participant: str, params: dict, token: str, consented_at: float | None = None) -> Assignment:
        assignment = Assignment(session_id, task_id, participant, params, created_at=0.0, token=token)
        self.assignments[session_id] = assignment
        return assignment

    def save_later(self, assignment: Assignment) -> None:
        self.saved.append(assignment.session_id)


def arrivals(parts: Parts, admission: Admission | None = None) -> tuple[Arrivals, FakeStudy, list[str]]:
    study, tasks = FakeStudy(), []
    admission = admission or Admission(1e9, 1_000_000, 1e9, 1_000_000, 0)
    return Arrivals(parts.table, parts.matchmaker, study, admission, parts.hosts, 15.0, tasks.append, clock=lambda: 1000.0), study, tasks  # type: ignore[arg-type]


def test_an_anonymous_start_is_seated_with_an_assignment_and_no_resume_secret():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, study, tasks = arrivals(parts)
        return await arrive.start(PAIR.id, {"params": {"group": "a"}}, "10.0.0.1"), study, tasks

    answer, study, tasks = asyncio.run(scenario())
    assert answer["participant"] == f"{ANONYMOUS}{answer['session_id']}" and "resume" not in answer
    assert answer["task_id"] == PAIR.id and tasks == [PAIR.id] and study.saved == [answer["session_id"]]
    assert study.assignments[answer["session_id"]].statistics == {"values": {}}


def test_a_second_tab_with_the_resume_secret_gets_the_same_seat_with_a_new_token():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, study, _ = arrivals(parts)
        first = await arrive.start(PAIR.id, {"id": "worker-1"}, "10.0.0.1")
        again = await arrive.start(PAIR.id, {"id": "worker-1", "resume": first["resume"]}, "10.0.0.1")
        guessed = await arrive.start(PAIR.id, {"id": "worker-1", "resume": "a-guess"}, "10.0.0.1")
        return parts, study, first, again, guessed

    parts, study, first, again, guessed = asyncio.run(scenario())
    assert first["resume"] == resume_secret(KEY, first["session_id"]) and first["participant"] == "pseudonym-worker-1"
    assert again["session_id"] == first["session_id"] and again["token"] != first["token"] and again["resume"] == first["resume"]
    assert parts.hosts.tokens == {first["session_id"]: again["token"]} and study.assignments[first["session_id"]].token == again["token"]
    assert guessed["session_id"] != first["session_id"]


def test_a_start_withdrawn_before_it_began_does_nothing_and_one_withdrawn_later_gives_its_seat_up():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, _, _ = arrivals(parts)
        await arrive.withdraw("early")
        seated_before = list(parts.hosts.seated)
        with pytest.raises(StartWithdrawn):
            await arrive.start(PAIR.id, None, "10.0.0.1", start_id="early")
        nothing_seated = (len(parts.table.sessions), parts.hosts.seated == seated_before)
        late = await arrive.start(PAIR.id, None, "10.0.0.1", start_id="late")
        await arrive.withdraw("late")
        racing = asyncio.ensure_future(arrive.start(PAIR.id, None, "10.0.0.1", start_id="racing"))
        await asyncio.sleep(0)
        await arrive.withdraw("racing")  # while it is under way: it finishes, then gives its seat up
        with pytest.raises(StartWithdrawn):
            await racing
        return nothing_seated, late, parts.hosts.withdrawn, arrive.withdrawals.count

    nothing_seated, late, withdrawn, count = asyncio.run(scenario())
    assert nothing_seated == (0, True)
    assert withdrawn[0] == late["session_id"] and len(withdrawn) == 2 and count == 3


async def withdraw_while_placement_waits(*others: str) -> tuple[Parts, list[dict[str, Any]]]:
    """A Start withdrawn while its game waits for room (no process has any yet), after the Starts
    of ``others`` (from other addresses) joined it; returns the parts and the others' answers."""
    parts = Parts(["left", "right"])
    arrive, _, _ = arrivals(parts)
    parts.pool.launcher.gate = gate = asyncio.Event()  # no process has room yet: placement waits
    gone = asyncio.ensure_future(arrive.start(PAIR.id, None, "10.0.0.1", start_id="gone"))
    await settle()
    staying = [asyncio.ensure_future(arrive.start(PAIR.id, None, f"10.0.0.{n + 2}", start_id=start_id)) for n, start_id in enumerate(others)]
    await settle()
    await arrive.withdraw("gone")
    gate.set()
    with pytest.raises(StartWithdrawn):
        await gone
    kept = [await start for start in staying]
    await settle()
    return parts, kept


def test_a_start_given_up_while_its_game_waits_for_room_is_not_seated_and_its_game_never_built():
    parts, _ = asyncio.run(withdraw_while_placement_waits())
    assert parts.hosts.opened == [] and parts.hosts.seated == [] and parts.hosts.withdrawn == []
    assert not parts.table.games and not parts.table.sessions
    assert all(not host.games for host in parts.pool.hosts)  # its placement was given back


def test_a_start_given_up_in_a_game_another_start_joins_leaves_its_seat_open_and_the_game_is_built_once():
    parts, [kept] = asyncio.run(withdraw_while_placement_waits("stays"))
    game = parts.table.games[kept["game_id"]]
    assert parts.hosts.opened == [game.game_id] and parts.hosts.seated == [(game.game_id, kept["agent"], kept["session_id"])]
    assert game.seat_listing() == {"left": None, "right": kept["session_id"]} and game.joinable
    assert list(parts.table.sessions) == [kept["session_id"]] and parts.hosts.withdrawn == []


def test_a_game_whose_only_start_was_cancelled_is_not_built_and_one_with_another_start_stays():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, _, _ = arrivals(parts)
        cancelled = asyncio.ensure_future(arrive.start(PAIR.id, None, "10.0.0.1"))
        await asyncio.sleep(0)  # its seat is reserved; the game is opening
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await settle()
        alone = (dict(parts.table.games), [game_id for game_id, _ in parts.hosts.stopped])
        kept = await arrive.start(PAIR.id, None, "10.0.0.1")
        second = asyncio.ensure_future(arrive.start(PAIR.id, None, "10.0.0.2"))
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        await settle()
        game = parts.table.games[kept["game_id"]]
        return alone, game.seated(), game.joinable

    (games_left, stopped), seated, joinable = asyncio.run(scenario())
    assert games_left == {} and stopped == []  # nobody was coming: never built, nothing to stop
    assert len(seated) == 1 and joinable  # the cancelled Start's seat is open again for the next


def test_a_connected_session_stands_when_its_start_is_withdrawn():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, _, _ = arrivals(parts)
        answer = await arrive.start(PAIR.id, None, "10.0.0.1", start_id="s")
        parts.table.connect(answer["session_id"], answer["token"])
        await arrive.withdraw("s")
        return parts.hosts.withdrawn

    assert asyncio.run(scenario()) == []


def test_a_start_beyond_the_admission_limits_touches_nothing():
    async def scenario():
        parts = Parts(["left", "right"])
        arrive, study, tasks = arrivals(parts, Admission(1e9, 1_000_000, 1e9, 1_000_000, 1))
        await arrive.start(PAIR.id, None, "10.0.0.1")
        with pytest.raises(TooManyStarts):
            await arrive.start(PAIR.id, None, "10.0.0.2")  # one session already waits for its participant
        return parts, tasks

    parts, tasks = asyncio.run(scenario())
    assert len(parts.table.sessions) == 1 and tasks == [PAIR.id]


def test_a_start_says_where_its_time_went_and_a_seat_in_an_open_game_waited_for_no_opening():
    async def scenario():
        parts = Parts(["left", "right"])
        first = await parts.seat("s1")
        second = await parts.seat("s2")  # the other seat of the same game, already open
        return first.answer()["start_ms"], second.answer()["start_ms"]

    first, second = asyncio.run(scenario())
    assert set(first) == set(second) == {"placement", "env_build", "opening_wait", "seat"}
    assert all(ms >= 0 for ms in [*first.values(), *second.values()])
    assert first["opening_wait"] >= first["env_build"]  # the first join waited for its game to open
    assert second["placement"] == first["placement"] and second["env_build"] == first["env_build"]  # the game's, not the join's
    assert second["opening_wait"] < first["opening_wait"] + 1
