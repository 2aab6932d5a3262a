"""The demo's terminal: one progress bar per stage, everything else logged.

``make demo`` (:mod:`speechbrain_imlkd.demo`) runs long stages whose
libraries print a lot. :class:`Console` keeps the terminal to one tqdm bar
per stage, advanced by the log records the stage emits (the ``*_tick``
readers below) or by polling, while :meth:`Console.capture` sends logging,
``stdout`` and ``stderr`` to a log file; ``verbose`` prints everything
instead.

Example
-------
>>> import io
>>> console = Console(verbose=True, stream=io.StringIO())
>>> console.say("corpus ready")
>>> console.stream.getvalue()
'[demo] corpus ready\\n'

Authors
 * speechbrain-imlkd contributors 2025
"""

import contextlib
import logging
import re
import sys
import threading

from tqdm import tqdm

#: Lines of the log file that :meth:`Console.capture` writes.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
#: SpeechBrain's ``FileTrainLogger`` logs one INFO record per epoch here.
EPOCH_LOGGER = "speechbrain.utils.train_logger"
#: Loggers whose records can advance a stage's bar.
TICK_LOGGERS = ("speechbrain", "speechbrain_imlkd")
#: ``speechbrain_imlkd.ig_cache`` logs each computed shard as ``shard k/n``.
IG_SHARD = re.compile(r"IG cache: shard (\d+)/(\d+)")
#: ``speechbrain_imlkd.analysis`` logs each analysed model.
ANALYSED = re.compile(r"^Analysed ")
#: Seconds between two calls of a stage's ``poll`` (the demo watches its
#: corpus folder being written).
POLL_SECONDS = 0.5
#: Width of the stage names, so that the bars line up.
DESC_WIDTH = 30


def say(message, file=None):
    """Prints a progress line (the demo's stages are long).

    Arguments
    ---------
    message : str
        What to print.
    file : file-like, optional
        Where to (default: ``sys.stdout``).

    Example
    -------
    >>> say("hello")
    [demo] hello
    """
    print(f"[demo] {message}", file=file or sys.stdout, flush=True)


def epoch_tick(record):
    """Counts one tick per epoch summary of SpeechBrain's ``FileTrainLogger``.

    Arguments
    ---------
    record : logging.LogRecord
        A log record.

    Returns
    -------
    int or None
        1 for an epoch summary, None otherwise.

    Example
    -------
    >>> epoch_tick(logging.makeLogRecord({"name": EPOCH_LOGGER, "msg": "epoch: 1",
    ...                                   "levelno": logging.INFO}))
    1
    >>> epoch_tick(logging.makeLogRecord({"name": EPOCH_LOGGER, "msg": "no torchvision",
    ...                                   "levelno": logging.WARNING})) is None
    True
    """
    # The same logger also warns (e.g. about torchvision) at import time.
    return 1 if record.name == EPOCH_LOGGER and record.levelno == logging.INFO else None


def shard_tick(record):
    """Reads ``(done, total)`` from the IG cache's per-shard log record.

    Arguments
    ---------
    record : logging.LogRecord
        A log record.

    Returns
    -------
    tuple of int or None
        ``(k, n)`` for ``IG cache: shard k/n ...``, None otherwise.

    Example
    -------
    >>> shard_tick(logging.makeLogRecord({"msg": "IG cache: shard %d/%d (x)", "args": (2, 5)}))
    (2, 5)
    """
    m = IG_SHARD.search(record.getMessage())
    return (int(m.group(1)), int(m.group(2))) if m else None


def analysis_tick(record):
    """Counts one tick per model analysed by ``analysis.run_analyses``.

    Arguments
    ---------
    record : logging.LogRecord
        A log record.

    Returns
    -------
    int or None

    Example
    -------
    >>> analysis_tick(logging.makeLogRecord({"msg": "Analysed %s on %d durations", "args": ("kd", 2)}))
    1
    """
    return 1 if ANALYSED.search(record.getMessage()) else None


class _TickHandler(logging.Handler):
    """Advances a progress bar from the log records a stage emits.

    Arguments
    ---------
    bar : tqdm
        The stage's bar.
    tick : callable
        ``tick(record)``: an int advances the bar, ``(done, total)`` sets
        it, None ignores the record.

    Example
    -------
    >>> import io
    >>> bar = tqdm(total=None, file=io.StringIO())
    >>> handler = _TickHandler(bar, shard_tick)
    >>> handler.emit(logging.makeLogRecord({"msg": "IG cache: shard 3/4 (x)"}))
    >>> bar.n, bar.total
    (3, 4)
    >>> handler.emit(logging.makeLogRecord({"msg": "unrelated"}))
    >>> bar.n
    3
    >>> bar.close()
    """

    def __init__(self, bar, tick):
        super().__init__(level=logging.INFO)
        self.bar, self.tick = bar, tick

    def emit(self, record):
        """Moves the bar: an int adds, ``(done, total)`` sets.

        Arguments
        ---------
        record : logging.LogRecord
            A log record.

        Example
        -------
        >>> import io
        >>> bar = tqdm(total=3, file=io.StringIO())
        >>> _TickHandler(bar, lambda record: 2).emit(logging.makeLogRecord({}))
        >>> bar.n
        2
        >>> bar.close()
        """
        try:
            step = self.tick(record)
        except Exception:  # a bar must never break the pipeline
            return
        if step is None:
            return
        if isinstance(step, tuple):
            self.bar.total = step[1]
            self.bar.n = step[0]
            self.bar.refresh()
        else:
            self.bar.update(step)


class Console:
    """The demo's terminal: one progress bar per stage, everything else logged.

    In quiet mode (the default of ``make demo``), :meth:`capture` sends the
    root logger, ``sys.stdout`` and ``sys.stderr`` (SpeechBrain's logging,
    warnings, prints) to ``<results>/demo.log``, and each stage shows one
    tqdm bar on the terminal, left there with its result as postfix. In
    verbose mode nothing is captured, the stages are announced by lines and
    the recipes show SpeechBrain's own progress bars.

    Arguments
    ---------
    verbose : bool
        Print everything instead of bars.
    stream : file-like, optional
        The terminal (default: ``sys.stdout`` when created).

    Example
    -------
    >>> import io
    >>> console = Console(verbose=True, stream=io.StringIO())
    >>> with console.stage("1/1 doctest", total=2, unit="step") as bar:
    ...     bar.update(2)
    ...     bar.set_postfix_str("ok")
    >>> console.stream.getvalue().splitlines()
    ['[demo] 1/1 doctest', '[demo] 1/1 doctest: done (ok)']
    """

    def __init__(self, verbose=False, stream=None):
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stdout

    def say(self, message):
        """Prints one ``[demo]`` line on the terminal.

        Arguments
        ---------
        message : str
            The line.

        Example
        -------
        >>> import io
        >>> console = Console(stream=io.StringIO())
        >>> console.say("done")
        >>> console.stream.getvalue()
        '[demo] done\\n'
        """
        say(message, file=self.stream)

    @contextlib.contextmanager
    def capture(self, log_path):
        """Sends logging, stdout and stderr to ``log_path`` (quiet mode only).

        The root logger's handlers and level are restored afterwards, and
        any handler added meanwhile (SpeechBrain reconfigures logging for
        every experiment folder) is closed.

        Arguments
        ---------
        log_path : str or Path
            The log file (overwritten).

        Yields
        ------
        None

        Example
        -------
        >>> import io, tempfile
        >>> from pathlib import Path
        >>> log = Path(tempfile.mkdtemp()) / "demo.log"
        >>> console = Console(stream=io.StringIO())
        >>> with console.capture(log):
        ...     print("noise")
        ...     logging.getLogger("speechbrain.doctest").warning("logged")
        >>> console.stream.getvalue()
        ''
        >>> text = log.read_text()
        >>> "noise" in text and "logged" in text
        True
        """
        if self.verbose:
            yield
            return
        root = logging.getLogger()
        saved_handlers, saved_level = list(root.handlers), root.level
        with open(log_path, "w", encoding="utf-8", buffering=1) as log_file:
            handler = logging.StreamHandler(log_file)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.handlers = [handler]
            root.setLevel(logging.INFO)
            try:
                with contextlib.redirect_stdout(log_file), contextlib.redirect_stderr(log_file):
                    yield
            finally:
                for h in list(root.handlers):
                    root.removeHandler(h)
                    if h not in saved_handlers:
                        h.close()
                for h in saved_handlers:
                    root.addHandler(h)
                root.setLevel(saved_level)

    @contextlib.contextmanager
    def stage(self, desc, total=None, unit="it", tick=None, poll=None):
        """One stage: a bar (quiet) or a start line and an end line (verbose).

        Arguments
        ---------
        desc : str
            Stage name.
        total : int, optional
            Expected count (set later by ``tick`` when unknown).
        unit : str
            What is counted.
        tick : callable, optional
            ``tick(record)`` for every log record of the stage: an int
            advances the bar, ``(done, total)`` sets it, None ignores.
        poll : callable, optional
            ``poll()`` -> count, read every :data:`POLL_SECONDS` in a thread.

        Yields
        ------
        tqdm
            The bar (disabled in verbose mode); its postfix is the result.

        Example
        -------
        >>> import io
        >>> console = Console(stream=io.StringIO())
        >>> with console.stage("2/2 epochs", unit="epoch", tick=epoch_tick) as bar:
        ...     logging.getLogger(EPOCH_LOGGER).info("epoch: 1")
        ...     bar.set_postfix_str("EER 0.1")
        >>> final = console.stream.getvalue().split("\\r")[-1]
        >>> final.startswith("2/2 epochs") and "100%" in final and "1/1" in final
        True
        >>> "EER 0.1" in final
        True
        """
        if self.verbose:
            self.say(desc)
        bar = tqdm(total=total, desc=desc.ljust(DESC_WIDTH), unit=unit, file=self.stream,
                   disable=self.verbose, dynamic_ncols=True, leave=True)
        handler = _TickHandler(bar, tick) if tick is not None else None
        if handler is not None:
            for name in TICK_LOGGERS:
                logging.getLogger(name).addHandler(handler)
        stop = threading.Event()
        poller = None
        if poll is not None and not self.verbose:
            def watch():
                while not stop.wait(POLL_SECONDS):
                    bar.n = poll()
                    bar.refresh()
            poller = threading.Thread(target=watch, daemon=True)
            poller.start()
        try:
            yield bar
        finally:
            stop.set()
            if poller is not None:
                poller.join()
            if handler is not None:
                for name in TICK_LOGGERS:
                    logging.getLogger(name).removeHandler(handler)
            # Resumed or cached work logs nothing: a finished stage is full.
            bar.total = bar.total or max(bar.n, 1)
            bar.n = bar.total
            bar.refresh()
            postfix = getattr(bar, "postfix", None)  # unset on a disabled bar
            bar.close()
            if self.verbose:
                self.say(f"{desc}: done" + (f" ({postfix})" if postfix else ""))

