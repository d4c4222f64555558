"""psp_tf.progress: one progress line for every tool, on a terminal and in a log."""

import io

import pytest

from psp_tf import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """A fake time.perf_counter: each read returns the current `now[0]`."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    return now


def test_log_gets_at_most_lines_whole_lines_with_eta():
    stream = io.StringIO()
    bar = progress.Progress(100, stream=stream, lines=10)
    for done in range(1, 101):
        bar.update(done)
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert 10 <= len(lines) <= 11 and "100/100" in lines[-1] and all("ETA" in line for line in lines)


def test_callback_form_has_eta():
    """The evaluator's on_progress(done, total) callback (was evaluation.report.Progress)."""
    stream = io.StringIO()
    bar = progress.Progress(4, stream=stream)
    bar(1, 4)
    bar(4, 4)
    text = stream.getvalue()
    assert "1/4" in text and "4/4" in text and "ETA" in text and text.endswith("\n")


def test_log_line_when_a_callback_skips_the_boundary():
    """The evaluator reports done in steps of a batch (3, 6, 9...): a line still follows each tenth."""
    stream = io.StringIO()
    bar = progress.Progress(30, stream=stream, lines=10)
    for done in range(3, 31, 3):
        bar(done, 30)
    assert len(stream.getvalue().splitlines()) == 10


def test_quiet_off_a_terminal_when_asked():
    stream = io.StringIO()
    bar = progress.Progress(5, stream=stream, lines=0)
    for done in range(1, 6):
        bar.update(done)
    assert stream.getvalue() == ""


def test_disabled_writes_nothing():
    stream = Terminal()
    bar = progress.Progress(2, stream=stream, enabled=False)
    bar.update(1)
    bar.message("hello")
    bar.update(2)
    assert stream.getvalue() == ""


def test_terminal_line_redrawn_in_place_and_ended(clock):
    stream = Terminal()
    bar = progress.Progress(3, label="step", stream=stream)
    for done in (1, 2, 3):
        clock[0] += 1.0
        bar.update(done, loss=0.123456)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "step 3/3  loss 0.1235" in text and progress._open_lines == []


def test_error_after_an_open_bar_starts_on_its_own_line():
    stream = Terminal()
    bar = progress.Progress(4, stream=stream)
    bar.update(1)
    progress.end_line()
    stream.write("error: x\n")
    assert stream.getvalue().splitlines()[-1] == "error: x"
    progress.end_line()  # nothing open: writes nothing
    assert stream.getvalue().endswith("error: x\n")


def test_message_ends_an_open_bar_first():
    stream = Terminal()
    bar = progress.Progress(4, stream=stream)
    bar.update(1)
    bar.message("evaluation at step 1")
    assert stream.getvalue().endswith("\nevaluation at step 1\n") and progress._open_lines == []


def test_speed_leaves_out_the_first_step(clock):
    stream = io.StringIO()
    bar = progress.Progress(10, unit="img", per_step=8, stream=stream, lines=10)
    clock[0] = 30.0  # the first step traced the graph: 30 s
    bar.update(1)
    assert bar.speed == 0.0 and "ETA ?" in stream.getvalue()
    clock[0] = 32.0  # then 1 s a step of 8 images
    bar.update(3)
    assert bar.speed == pytest.approx(8.0)
    assert stream.getvalue().splitlines()[-1].endswith("8 img/s  elapsed 0:32  ETA 0:07")


def test_slow_work_keeps_its_unit(clock):
    stream = io.StringIO()
    bar = progress.Progress(3, stream=stream, lines=3)
    bar.update(1)
    clock[0] = 4.0
    bar.update(2)
    assert "0.25 img/s" in stream.getvalue().splitlines()[-1]


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (59.6, "1:00"), (3599, "59:59"), (3600, "1:00:00"),
                                           (float("nan"), "?"), (-3, "0:00")])
def test_clock(seconds, text):
    assert progress.clock(seconds) == text


def test_the_end_is_written_once_and_counts_without_a_decimal_point():
    # The evaluator reports fractions within an image and may report the end as 200.0, then 200.
    stream = io.StringIO()
    bar = progress.Progress(4, label="evaluating", stream=stream, lines=10)
    for done in (1, 2, 3, 4.0, 4):
        bar.update(done)
    lines = stream.getvalue().splitlines()
    assert [line.split("evaluating ")[1].split()[0] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
