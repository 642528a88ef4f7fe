"""``crowdplay.memory``: freed memory goes back to the operating system, in a process of its own
(what a full collection or ``malloc_trim`` frees must not depend on what this test process did)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEADER = textwrap.dedent(
    """
    import gc, time, weakref

    def rss_mb():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4096 / 2**20

    def old_cyclic_garbage():
        '''A reference cycle that survived two collections (so it sits in the oldest generation,
        which CPython collects rarely), then dropped; returns a list that gets an item when the
        cycle is freed.'''
        freed = []
        class Cell: pass
        cell = Cell()
        cell.cycle = cell
        weakref.finalize(cell, freed.append, True)
        gc.collect(1)
        gc.collect(1)
        del cell
        return freed
    """
)


def run_python(body: str) -> str:
    script = HEADER + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_release_returns_heap_holes_to_the_os() -> None:
    """Blocks freed in the middle of the heap stay in the process's RSS after ``free``; the release
    gives their pages back."""
    out = run_python(
        """
        from crowdplay.memory import release_freed_memory
        base = rss_mb()
        blocks = [bytes(2000) for _ in range(100_000)]  # ~200 MB of malloc'd (not pymalloc) blocks
        kept = blocks[::64]  # one in 64 stays: the heap cannot shrink from its top
        del blocks
        held = rss_mb() - base
        release_freed_memory()
        print(held, rss_mb() - base, len(kept))
        """
    )
    held, after, _ = (float(x) for x in out.split())
    assert held > 150, f"free alone kept {held:.0f} MB resident (so there is something to give back)"
    assert after < 30, f"after the release {after:.0f} MB of it remained"


def test_release_collects_cyclic_garbage_in_the_oldest_generation() -> None:
    out = run_python(
        """
        from crowdplay.memory import release_freed_memory
        gc.disable()
        freed = old_cyclic_garbage()
        before = bool(freed)
        release_freed_memory()
        print(before, bool(freed))
        """
    )
    assert out.split() == ["False", "True"]


@pytest.mark.parametrize("interval_s, expect_started", [(0.2, True), (0.0, False)])
def test_a_process_releases_on_its_own_thread_once_started(interval_s: float, expect_started: bool) -> None:
    out = run_python(
        f"""
        import threading
        from crowdplay.memory import release_freed_memory_every
        gc.disable()  # only the release thread collects
        freed = old_cyclic_garbage()
        started = release_freed_memory_every({interval_s})
        again = release_freed_memory_every({interval_s})
        time.sleep(0.5)  # two of the release's intervals
        threads = sum(t.name == "release-freed-memory" for t in threading.enumerate())
        print(started, again, threads, bool(freed))
        """
    )
    expected = ["True", "False", "1", "True"] if expect_started else ["False", "False", "0", "False"]
    assert out.split() == expected


def test_only_the_first_freeze_in_a_process_freezes() -> None:
    """Later callers (a second ingress replica's ``ready``) must not freeze live participants' objects."""
    out = run_python(
        """
        from crowdplay.memory import freeze_startup_objects
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        later = [[i] for i in range(1000)]
        freeze_startup_objects()
        print(frozen > 0, gc.get_freeze_count() == frozen)
        """
    )
    assert out.split() == ["True", "True"]

