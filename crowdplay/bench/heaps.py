"""What a long-lived process's memory is made of, asked inside the process.

Resident memory alone cannot say whether a soak's growth is Python objects (ours to find and
bound), native allocations (Ray's core worker, gRPC, Serve) or freed heap that glibc has not given
back. A census run inside each long-lived actor (through ``__ray_call__``) after a full
collection and ``malloc_trim`` separates the three: Python's allocated blocks and its object
counts by type, glibc's bytes in use and free (``mallinfo2``), and the anonymous resident memory,
also by region (``/proc/self/smaps``), as bytes in use can stay put while the pages they sit on
spread.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from collections.abc import Iterator

import ray
from ray.actor import ActorHandle

from crowdplay.config import Settings
from crowdplay.recording.writer import WRITER_NAME

SERVE_REPLICA_PREFIX = "SERVE_REPLICA::"
#: glibc reserves each arena beyond the main one as a heap aligned to its 64 MB maximum size.
ARENA_ALIGNMENT = 64 << 20
_SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")
ARENA_REGIONS = ("main_arena", "other_arenas")
REGIONS = (*ARENA_REGIONS, "stack", "other")


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc 2.33 and later)."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mappings(smaps_path: str) -> Iterator[tuple[str, str, int, int]]:
    """Each mapping's region (see ``anonymous_regions_kb``), permissions, size and anonymous
    resident KB."""
    region, permissions, size = "", "", 0
    with open(smaps_path) as smaps:
        for line in smaps:
            header = _SMAPS_HEADER.match(line)
            if header:
                start, permissions, path = int(header[1], 16), header[2], header[3].strip()
                region = ("main_arena" if path == "[heap]" else "stack" if path == "[stack]"
                          else "other_arenas" if not path and start % ARENA_ALIGNMENT == 0 else "other")
            elif line.startswith("Size:"):
                size = int(line.split()[1])
            elif line.startswith("Anonymous:"):
                yield region, permissions, size, int(line.split()[1])


def regions_kb(smaps_path: str = "/proc/self/smaps") -> tuple[dict[str, int], dict[str, int]]:
    """One pass over the mappings: ``anonymous_regions_kb`` and ``malloc_heaps_kb`` together."""
    anonymous, heaps = dict.fromkeys(REGIONS, 0), dict.fromkeys(ARENA_REGIONS, 0)
    for region, permissions, size_kb, anonymous_kb in _mappings(smaps_path):
        anonymous[region] += anonymous_kb
        if region in heaps and permissions.startswith("rw"):
            heaps[region] += size_kb
    return anonymous, heaps


def anonymous_regions_kb(smaps_path: str = "/proc/self/smaps") -> dict[str, int]:
    """Anonymous resident KB by region: glibc's main arena (``[heap]``), its other arenas (heaps
    aligned to ``ARENA_ALIGNMENT``), the main thread's stack, and the rest (Python's object
    arenas, blocks glibc maps on their own, thread stacks, Ray's and gRPC's own maps)."""
    return regions_kb(smaps_path)[0]


def malloc_heaps_kb(smaps_path: str = "/proc/self/smaps") -> dict[str, int]:
    """The address space glibc's arenas hold, readable and writable (an arena's reserved rest is
    mapped inaccessible), KB: ``main_arena`` and ``other_arenas``. Resident heap pages can only
    come and go inside it, so while it does not grow, neither can they beyond it."""
    return regions_kb(smaps_path)[1]


def heap_census(_actor: object = None) -> dict:
    """This process's memory by kind, after a full collection and a trim (what the periodic
    memory release does): ``python_blocks``, ``malloc_in_use_kb`` and ``malloc_free_kb`` (glibc
    arenas and mmapped chunks; -1 without glibc 2.33), ``rss_anon_kb`` and, split by region,
    ``rss_anon_by_region_kb`` (``anonymous_regions_kb``), the arenas' address space
    ``malloc_heaps_kb`` (``malloc_heaps_kb``), and ``types``, the count of each Python
    type the collector tracks. Takes the actor as ``__ray_call__`` passes it."""
    import gc
    import sys

    from crowdplay.memory import libc_function, release_freed_memory

    release_freed_memory()
    in_use = free = -1
    mallinfo2 = libc_function("mallinfo2")
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        in_use, free = (info.uordblks + info.hblkhd) // 1024, info.fordblks // 1024
    regions, heaps = regions_kb()
    return {
        "malloc_heaps_kb": heaps,
        "python_blocks": sys.getallocatedblocks(),
        "malloc_in_use_kb": in_use,
        "malloc_free_kb": free,
        "rss_anon_kb": sum(regions.values()),
        "rss_anon_by_region_kb": regions,
        "types": dict(Counter(type(obj).__name__ for obj in gc.get_objects())),
    }


def long_lived_actors(settings: Settings) -> dict[str, ActorHandle]:
    """The deployment's manager, writer and ingress replicas, by a readable name."""
    actors: dict[str, ActorHandle] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = entry["name"], entry.get("namespace")
        if namespace == settings.namespace and name in (settings.manager_name, WRITER_NAME):
            actors[name] = ray.get_actor(name, namespace=namespace)
        elif name.startswith(SERVE_REPLICA_PREFIX) and "#Ingress#" in name:
            actors["Ingress#" + name.rsplit("#", 1)[-1]] = ray.get_actor(name, namespace=namespace)
    return actors


def census(actors: dict[str, ActorHandle], timeout_s: float = 60.0) -> dict[str, dict]:
    """Each actor's ``heap_census``; an actor that does not answer is left out."""
    refs = {name: actor.__ray_call__.remote(heap_census) for name, actor in actors.items()}
    found: dict[str, dict] = {}
    for name, ref in refs.items():
        try:
            found[name] = ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError):
            continue
    return found


def heap_growth(first: dict[str, dict], last: dict[str, dict], top: int = 8) -> dict[str, dict]:
    """Per actor in both censuses, how each kind of memory moved (KB, blocks), the anonymous
    resident memory by region, and the Python types whose counts moved most."""
    growth: dict[str, dict] = {}
    for name in sorted(set(first) & set(last)):
        before, after = first[name], last[name]
        types = {kind: after["types"].get(kind, 0) - before["types"].get(kind, 0) for kind in set(before["types"]) | set(after["types"])}
        moved = sorted(((kind, change) for kind, change in types.items() if change), key=lambda item: -abs(item[1]))[:top]
        growth[name] = {
            **{key: after[key] - before[key] for key in ("python_blocks", "malloc_in_use_kb", "malloc_free_kb", "rss_anon_kb")},
            "rss_anon_by_region_kb": {region: kb - before["rss_anon_by_region_kb"].get(region, 0) for region, kb in after["rss_anon_by_region_kb"].items()},
            "malloc_heaps_kb": {region: kb - before["malloc_heaps_kb"].get(region, 0) for region, kb in after["malloc_heaps_kb"].items()},
            "types": dict(moved),
        }
    return growth
