"""One progress line for every long job: how far, how fast, and the time left (ETA).

On a terminal the line is redrawn in place (carriage return). Anywhere else (a log file, CI, a
pipe) a whole line is written at most `lines` times over the job, each with its newline, so a log
stays readable and an error printed after it starts on a line of its own; `lines=0` keeps quiet
there. `end_line()` finishes a line left open on a terminal: the drivers call it before printing
an error, so the error never ends up glued to a half-drawn bar.

Our own rather than a library's: `keras.utils.Progbar` writes to stdout only (evaluate prints its
results there and its progress on stderr), and tqdm (a new dependency) writes either nothing or
carriage-return frames when the stream is not a terminal, where a log wants a whole line now and then.

This module is light (no TensorFlow): the drivers import it before TensorFlow starts.
"""

import math
import sys
import time

_open_lines = []  # streams whose last write is a bar line without its newline


def end_line():
    """Ends every progress line left open on a terminal (before an error line is printed)."""
    while _open_lines:
        stream = _open_lines.pop()
        stream.write("\n")
        stream.flush()


def clock(seconds):
    """`M:SS`, or `H:MM:SS` from an hour on; `?` when unknown (not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _count_text(done):
    """`done` as a count: whole numbers without a decimal point (a callback may pass 12.0)."""
    return str(int(done)) if float(done).is_integer() else f"{done:.1f}"


def _value_text(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """A progress line for `total` steps: `update(done)` after each, `message(text)` for news.

    Speed leaves out the first update's step (graph tracing, warm-up), so the ETA is not skewed
    by it; until a second update it is unknown (`speed` 0.0, ETA `?`).

    Args:
      total: the number of steps (a callback may also pass it to `update`).
      label: a word shown before `done/total` (e.g. "step").
      unit: what the speed counts (e.g. "img").
      per_step: units per step (e.g. the global batch size), for the speed.
      stream: where to write (default: sys.stderr, read when the line is written).
      enabled: False writes nothing at all (e.g. a worker that is not the chief).
      lines: how many whole lines to write over the job when `stream` is not a terminal (0: none).
      width: the bar's width in characters.
    """

    def __init__(self, total, *, label="", unit="img", per_step=1, stream=None, enabled=True, lines=20,
                 width=24):
        self.total, self.label, self.unit, self.per_step = total, label, unit, per_step
        self.enabled, self.lines, self.width = enabled, lines, width
        self._stream = stream
        self.start = time.perf_counter()
        self._first = None  # (time, done) of the first update: where the speed is measured from
        self._last_drawn = -math.inf  # when the terminal line was last redrawn
        self._last_logged = 0  # `done` of the last whole line written off a terminal
        self.speed = 0.0  # units per second
        self._final_written = False

    @property
    def stream(self):
        return self._stream or sys.stderr

    def _tty(self):
        return getattr(self.stream, "isatty", lambda: False)()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, done, total=None, **fields):
        """Reports `done` steps finished (of `total`, if it is given here); `fields` are shown as
        `name value` (floats to 4 significant digits), e.g. loss=0.25."""
        if total is not None:
            self.total = total
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done)
        elif done > self._first[1] and now > self._first[0]:
            self.speed = (done - self._first[1]) * self.per_step / (now - self._first[0])
        if not self.enabled or not self._due(done, now):
            return
        line = self._line(done, now, fields)
        if self._tty():
            self.stream.write("\r" + line)
            self._mark_open(done < self.total)
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    __call__ = update  # so a Progress is itself an `on_progress(done, total)` callback

    def _due(self, done, now):
        """Whether to write now: a terminal at most 10 times a second, a log `lines` times a job; the
        final line once (a callback may report the end twice, e.g. 200.0 then 200)."""
        final = done >= self.total
        if final and self._final_written:
            return False
        self._final_written = final
        if self._tty():
            due = final or now - self._last_drawn >= 0.1
            self._last_drawn = now if due else self._last_drawn
            return due
        if self.lines <= 0:
            return False
        every = max(1, math.ceil(self.total / self.lines))
        due = final or done // every > self._last_logged // every
        self._last_logged = done if due else self._last_logged
        return due

    def _line(self, done, now, fields):
        filled = min(self.width, int(self.width * done / max(self.total, 1)))
        head = f"{self.label} " if self.label else ""
        extra = "".join(f"  {name} {_value_text(value)}" for name, value in fields.items())
        if self.speed <= 0:
            rate, eta = f"? {self.unit}/s", math.nan
        else:
            rate = f"{self.speed:.3g} {self.unit}/s"
            eta = (self.total - done) * self.per_step / self.speed
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {head}{_count_text(done)}/{self.total}{extra}  {rate}  "
                f"elapsed {clock(now - self.start)}  ETA {clock(eta)}")

    def _mark_open(self, is_open):
        if is_open and self.stream not in _open_lines:
            _open_lines.append(self.stream)
        elif not is_open and self.stream in _open_lines:
            _open_lines.remove(self.stream)

    def message(self, text):
        """Writes `text` as a line of its own (after ending an open bar line)."""
        if self.enabled:
            self.close()
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self):
        """Ends this bar's line if it is left open on a terminal."""
        if self.stream in _open_lines:
            _open_lines.remove(self.stream)
            self.stream.write("\n")
            self.stream.flush()
