"""A clock tests move by hand (for code that takes `clock=`)."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
