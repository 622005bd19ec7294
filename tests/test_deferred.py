"""NextTurn reports every finished operation once, on the loop's next turn, across loops."""

from __future__ import annotations

import asyncio
import threading

from otelperf._deferred import NextTurn


def test_reported_on_the_next_turn_in_order() -> None:
    """Items wait for the loop's next turn, then come out in the order they went in."""
    seen: list[int] = []
    turn: NextTurn[int] = NextTurn(seen.append)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        for i in range(5):
            turn.add(i, loop)
        before = list(seen)
        await asyncio.sleep(0)
        return before

    assert asyncio.run(main()) == []
    assert seen == [0, 1, 2, 3, 4]


def test_a_loop_closed_before_its_turn_leaves_nothing_stuck() -> None:
    """Items queued on a loop that closed unrun are reported by the next loop that adds."""
    seen: list[str] = []
    turn: NextTurn[str] = NextTurn(seen.append)
    first = asyncio.new_event_loop()
    first.call_soon(turn.add, "lost?", first)
    first.call_soon(first.stop)  # stops after this turn: the report callback never runs
    first.run_forever()
    first.close()
    assert seen == []

    async def later() -> None:
        turn.add("next", asyncio.get_running_loop())
        await asyncio.sleep(0)

    asyncio.run(later())
    assert seen == ["lost?", "next"]


def test_threads_with_their_own_loops_lose_nothing() -> None:
    """Four threads, each running a loop, add 5,000 items each: every one reported once."""
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def report(item: tuple[int, int]) -> None:
        with lock:
            seen.append(item)

    turn: NextTurn[tuple[int, int]] = NextTurn(report)

    def work(worker: int) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            for i in range(5_000):
                turn.add((worker, i), loop)
                if i % 7 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0)

        asyncio.run(main())

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    turn.flush()  # what the last turns of loops that ended may have left
    assert sorted(seen) == [(w, i) for w in range(4) for i in range(5_000)]
