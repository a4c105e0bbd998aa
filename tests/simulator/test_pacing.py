"""Simulated time never runs ahead of the wall clock."""

from __future__ import annotations

from simulator.pacing import sim_window

WALL = 1_764_034_200.0


def test_real_time_starts_now() -> None:
    assert sim_window(WALL, 1.0, None, None, None) == (int(WALL * 1000), None)


def test_explicit_start_is_kept() -> None:
    assert sim_window(WALL, 600.0, 60.0, 123, 456) == (123, 456)


def test_accelerated_run_ends_at_the_present() -> None:
    start, end = sim_window(WALL, 60.0, 10.0, None, None)
    assert end == int(WALL * 1000)
    # after 10 wall seconds at 60x the simulated clock is exactly the wall clock
    assert start + 10 * 60 * 1000 == int((WALL + 10) * 1000)


def test_accelerated_run_without_duration_covers_the_last_day() -> None:
    start, end = sim_window(WALL, 100.0, None, None, None)
    assert (start, end) == (int((WALL - 86_400) * 1000), int(WALL * 1000))
