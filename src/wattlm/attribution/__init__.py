"""SPLIT: one work model and the energy splits built on it — over engine steps (a server that knows
them, exact) and over request timelines (any server, seen from its clients, its timings or its
traces). Conservation lives here: every split adds up to what the meter read, idle kept apart."""
