"""Commands that change the schedule: the tick, maintenance windows, regions, dead letters."""
