"""How a run's start-up, preparation and memory grow with the corpus: 10 MB, 100 MB and 1 GiB.

The corpora are built from text already on the machine (the standard library's .py sources,
/usr/share/doc's copyright files, ...), repeated to the size asked for: no download. Each is
trained twice by the real `charlm-train` in a process of its own, with the same short command:
the first run has an empty cache (CHARLM_CACHE) and prepares the corpus, the second finds it
there and only maps it. A text given with --baseline (Tiny Shakespeare in the README) is the
baseline row, run the same way.

Per run:
- prep s: what `charlm.prepared.prepare` logs for the first run (both passes over the text,
  read from the page cache: the corpus was written just before).
- first step s: from just before the command is started to the end of the first training step
  (forward, backward, optimiser), stamped by a small callback this module adds with a Hydra
  override (`+callbacks.scale_probe`): nothing in the training code is changed for it.
- wall s: from the start of the command to its exit (30 steps and one validation by default).
- peak RSS MB: the peak resident set of the training process as the kernel reports it to its
  parent (`os.wait4`'s rusage, the same figure as RUSAGE_CHILDREN of a wrapper per run). Mapped
  file pages would count in it (the ids are read with positioned reads, not mapped, for that
  reason). "file MB" is the resident file-backed memory at the end of the second run's
  training: the shared libraries (torch alone is a few hundred MB) plus anything mapped, so its
  growth over the baseline shows whether the corpus is held resident.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from charlm.errors import CharLMError
from charlm.overrides import quote_override
from charlm.prepared import RACY_S
from charlm.tooling.benchmark.measure import compose_train, format_table, log, machine, write_json

DEFAULT_SIZES = ("10MB", "100MB", "1GiB")
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
# The short run each corpus gets: default model and data settings, no logger, no progress output.
# One torch thread: with more threads than free cores (a shared machine), a run's time was seen to
# vary 5x from one run to the next, its threads spinning while waiting for each other.
RUN_OVERRIDES = [
    "data=text",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "threads=1",
]
PREPARED = re.compile(r"prepared ([\d,]+) characters \(([\d,]+) distinct, (\w+)\) in ([\d.]+) s")
MAPPED = re.compile(r"([\d,]+) characters prepared before, in ")
VOCAB = re.compile(r"vocabulary of ([\d,]+) characters")
GOALS = {"delta_rss_mb": 300.0, "prep_s": 90.0, "startup_slack_s": 1.0, "startup_slack": 0.2}


# ---------------------------------------------------------------------------- inside the training process


class ScaleProbe(L.Callback):
    """Writes, as JSON to `path`, when the first training step ended (wall clock, comparable across
    processes) and the resident memory split when training ended. Added to a run by a Hydra override."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.record: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if "first_step_at" not in self.record:
            self.record["first_step_at"] = time.time()
            self.record["at_first_step"] = memory_status()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record["at_end"] = memory_status()
        self.path.write_text(json.dumps(self.record))


def memory_status() -> dict[str, float]:
    """This process's resident memory by kind (MB), from /proc/self/status; empty off Linux."""
    fields = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    found = (line.split() for line in lines if line.split(":")[0] in fields)
    return {parts[0].rstrip(":"): int(parts[1]) / 1024 for parts in found}


# ---------------------------------------------------------------------------- corpora


def parse_size(text: str) -> int:
    """'10MB' -> 10**7 bytes, '1GiB' -> 2**30: decimal and binary units, as people write them."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in UNITS or float(match.group(1)) <= 0:
        raise CharLMError(f"--sizes {text!r} is not a size; write e.g. 200KB, 10MB, 1GiB")
    return int(float(match.group(1)) * UNITS[unit])


def source_files() -> list[Path]:
    """Text that every machine with this Python has, in a fixed order: the standard library's
    sources first (tens of MB), then the distribution's copyright and licence files."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    python = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    docs = sorted(Path("/usr/share/doc").glob("**/copyright")) + sorted(Path("/usr/share/common-licenses").glob("*"))
    return [p for p in python + docs if p.is_file()]


def utf8_texts(files: Sequence[Path]) -> Iterator[bytes]:
    """The contents of the files that are valid UTF-8 (a corpus with a bad byte would not prepare)."""
    for path in files:
        try:
            raw = path.read_bytes()
            raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if raw:
            yield raw if raw.endswith(b"\n") else raw + b"\n"


def collect(size: int, files: Sequence[Path]) -> list[bytes]:
    """Enough distinct text for `size` bytes, or all there is: only that much is held in memory."""
    pieces, total = [], 0
    for raw in utf8_texts(files):
        pieces.append(raw)
        total += len(raw)
        if total >= size:
            break
    if not pieces:
        raise CharLMError("no UTF-8 text files found to build a corpus from")
    return pieces


def build_corpus(path: Path, size: int, files: Sequence[Path]) -> Path:
    """`path` holding `size` bytes (cut at a line end) of the files' text, repeated as often as needed.

    Kept when it already has that size: a --workdir keeps its corpora between benchmarks."""
    if path.is_file() and path.stat().st_size <= size and path.stat().st_size > size - 4096:
        return path
    pieces, written = collect(size, files), 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        while written < size:
            for raw in pieces:
                if written + len(raw) > size:
                    raw = raw[: raw.rfind(b"\n", 0, size - written) + 1]
                    written += out.write(raw)
                    return path
                written += out.write(raw)
    return path


def wait_until_settled(path: Path) -> None:
    """A file changed in the last RACY_S seconds is hashed again by every run (`charlm.prepared`):
    wait that out, or the second run would not find the corpus prepared by the first."""
    st = path.stat()
    wait = max(st.st_mtime, st.st_ctime) + RACY_S + 0.5 - time.time()
    if wait > 0:
        time.sleep(wait)


# ---------------------------------------------------------------------------- one run


@dataclass
class ScaleRun:
    first_step_s: float
    wall_s: float
    peak_rss_mb: float
    prep_s: float | None  # None when the corpus was found in the cache
    mapped: bool
    characters: int
    vocab: int
    dtype: str | None
    file_mb: float | None  # resident file-backed memory at the end of training
    anon_mb: float | None  # resident anonymous memory at the end of training
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)


def train_command() -> list[str]:
    """`charlm-train` as installed beside this Python; without it, the same entry point through -c."""
    script = Path(sys.executable).with_name("charlm-train")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from charlm.cli.app import train_cli; train_cli()"]


def run_overrides(corpus: Path, steps: int, run_dir: Path, probe: Path, sets: Sequence[str]) -> list[str]:
    """The training command's overrides; the user's `--set` come last and win."""
    return [
        *RUN_OVERRIDES,
        quote_override("data.path", str(corpus)),
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        quote_override("hydra.run.dir", str(run_dir)),
        f"+callbacks.scale_probe._target_={__name__}.ScaleProbe",
        quote_override("+callbacks.scale_probe.path", str(probe)),
        *sets,
    ]


def run_training(overrides: list[str], cache: Path, log_path: Path, timeout: float) -> tuple[float, float, float]:
    """Run one training to its end; returns (start time, end time, peak RSS MB) of that process.

    `os.wait4` reaps it with its own rusage: the peak is this process's alone, not the benchmark's."""
    env = {**os.environ, "CHARLM_CACHE": str(cache), "HYDRA_FULL_ERROR": "1"}
    with log_path.open("w") as out:
        started = time.time()
        proc = subprocess.Popen(train_command() + overrides, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            status, usage = wait_with_timeout(proc, timeout)
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
        ended = time.time()
    if status != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise CharLMError(f"training exited with status {status} (log {log_path}):\n{tail}")
    peak_kb = usage.ru_maxrss  # KiB on Linux
    return started, ended, peak_kb / 1024


def wait_with_timeout(proc: subprocess.Popen, timeout: float) -> tuple[int, Any]:
    """`os.wait4` for `proc`, polling so that a hung run is killed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            raise CharLMError(f"training ran past --timeout {timeout:g} s")
        time.sleep(0.05)


def read_run(log_path: Path, probe: Path) -> dict[str, Any]:
    """What the run's log and probe say: preparation, corpus size, vocabulary, first step, memory."""
    text = log_path.read_text(errors="replace")
    prepared, mapped, vocab = PREPARED.search(text), MAPPED.search(text), VOCAB.search(text)
    if not probe.is_file() or vocab is None or (prepared is None and mapped is None):
        raise CharLMError(f"the run's log {log_path} lacks the lines this benchmark reads")
    record = json.loads(probe.read_text())
    end = record.get("at_end", {})
    return {
        "prep_s": float(prepared.group(4)) if prepared else None,
        "mapped": prepared is None,
        "characters": int((prepared or mapped).group(1).replace(",", "")),
        "vocab": int(vocab.group(1).replace(",", "")),
        "dtype": prepared.group(3) if prepared else None,
        "first_step_at": record["first_step_at"],
        "file_mb": end.get("RssFile"),
        "anon_mb": end.get("RssAnon"),
    }


def measure_run(corpus: Path, cache: Path, name: str, workdir: Path, args: argparse.Namespace) -> ScaleRun:
    """One real training run of `corpus` with `cache` as CHARLM_CACHE, measured from outside."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path, probe = logs / f"{name}.log", logs / f"{name}.probe.json"
    probe.unlink(missing_ok=True)
    overrides = run_overrides(corpus, args.steps, workdir / "runs" / name, probe, args.set)
    load_before = list(os.getloadavg())
    started, ended, peak_mb = run_training(overrides, cache, log_path, args.timeout)
    seen = read_run(log_path, probe)
    return ScaleRun(
        first_step_s=seen.pop("first_step_at") - started,
        wall_s=ended - started,
        peak_rss_mb=peak_mb,
        **seen,
        load_before=load_before,
        load_after=list(os.getloadavg()),
    )


# ---------------------------------------------------------------------------- one corpus: two runs


def corpus_row(label: str, corpus: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both runs of one corpus: the first into an empty cache, the second from the same cache."""
    wait_until_settled(corpus)
    cache = workdir / f"cache-{label}"
    shutil.rmtree(cache, ignore_errors=True)
    try:
        log(f"{label}: first run (prepares) ...")
        first = measure_run(corpus, cache, f"{label}-1", workdir, args)
        log(f"{label}: second run (cached) ...")
        second = measure_run(corpus, cache, f"{label}-2", workdir, args)
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # a 1 GiB corpus's ids take 1-2 GiB
    return {
        "corpus": label,
        "path": str(corpus),
        "bytes": corpus.stat().st_size,
        "characters": first.characters,
        "vocab": first.vocab,
        "dtype": first.dtype,
        "prep_s": first.prep_s,
        "second_mapped": second.mapped,
        "first": asdict(first),
        "second": asdict(second),
    }


def add_deltas(rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> None:
    """Each row's peak RSS and first step minus the baseline's, run by run (None without a baseline)."""
    for row in rows:
        for run in ("first", "second"):
            base = baseline[run] if baseline else None
            row[run]["delta_rss_mb"] = row[run]["peak_rss_mb"] - base["peak_rss_mb"] if base else None
            row[run]["delta_first_step_s"] = row[run]["first_step_s"] - base["first_step_s"] if base else None


def goal_check(row: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """The scale goals for one corpus: <= 300 MB more peak RSS than the baseline, prepared in <= 90 s,
    and a second run that reaches its first step as soon as the baseline's second run (within 1 s or 20%)."""
    check: dict[str, Any] = {"prep_ok": row["prep_s"] is not None and row["prep_s"] <= GOALS["prep_s"]}
    if baseline is not None:
        delta = max(row["first"]["delta_rss_mb"], row["second"]["delta_rss_mb"])
        base_start = baseline["second"]["first_step_s"]
        slack = max(GOALS["startup_slack_s"], GOALS["startup_slack"] * base_start)
        check["rss_ok"] = delta <= GOALS["delta_rss_mb"]
        check["startup_ok"] = row["second"]["first_step_s"] <= base_start + slack
    return check


# ---------------------------------------------------------------------------- the table

HEADERS = [
    "corpus",
    "size MB",
    "chars",
    "vocab",
    "dtype",
    "prep s",
    "step1 s 1st",
    "step1 s 2nd",
    "wall s 1st",
    "wall s 2nd",
    "RSS MB 1st",
    "RSS MB 2nd",
    "ΔRSS 1st",
    "ΔRSS 2nd",
    "file MB 2nd",
]


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.0f}"


def table_row(row: dict[str, Any]) -> list[Any]:
    first, second = row["first"], row["second"]
    return [
        row["corpus"],
        row["bytes"] / 1e6,
        row["characters"],
        row["vocab"],
        row["dtype"],
        row["prep_s"] if row["prep_s"] is not None else "-",
        first["first_step_s"],
        second["first_step_s"],
        first["wall_s"],
        second["wall_s"],
        first["peak_rss_mb"],
        second["peak_rss_mb"],
        signed(first["delta_rss_mb"]),
        signed(second["delta_rss_mb"]),
        second["file_mb"] if second["file_mb"] is not None else "-",
    ]


def scale_table(rows: list[dict[str, Any]]) -> str:
    return format_table(HEADERS, [table_row(r) for r in rows])


def goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per generated corpus: which goals hold (the baseline row itself has none)."""
    lines = []
    for row in rows:
        if "goals" not in row:
            continue
        verdicts = ", ".join(f"{k.removesuffix('_ok')} {'yes' if v else 'NO'}" for k, v in row["goals"].items())
        if not row["second_mapped"]:
            verdicts += ", second run re-prepared (cache not reused)"
        lines.append(f"{row['corpus']}: {verdicts}")
    return lines


# ---------------------------------------------------------------------------- the command


def find_baseline(option: str | None) -> Path | None:
    """The baseline text --baseline names; none without it (or with --baseline none)."""
    if option is None or option.lower() == "none":
        return None
    if not Path(option).is_file():
        raise CharLMError(f"--baseline {option} is not a file")
    return Path(option)


def scale_rows(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    """The baseline row (if any), then one row per size, smallest first."""
    sizes = sorted(((parse_size(s), s) for s in args.sizes), key=lambda pair: pair[0])
    baseline_path = find_baseline(args.baseline)
    rows, baseline = [], None
    if baseline_path is not None:
        baseline = corpus_row(baseline_path.stem, baseline_path, workdir, args)
        rows.append(baseline)
    files = source_files()
    for size, label in sizes:
        log(f"{label}: building a corpus of {size:,} bytes ...")
        corpus = build_corpus(workdir / "corpora" / f"{label}.txt", size, files)
        rows.append(corpus_row(label, corpus, workdir, args))
        if not args.keep_corpora:
            corpus.unlink()
    add_deltas(rows, baseline)
    for row in rows[1 if baseline else 0 :]:
        row["goals"] = goal_check(row, baseline)
    return rows


def check_args(args: argparse.Namespace) -> None:
    """Refuse a bad size, step count or override before anything is built or run."""
    for size in args.sizes:
        parse_size(size)
    if args.steps < 1:
        raise CharLMError("--steps must be at least 1")
    find_baseline(args.baseline)
    compose_train([*RUN_OVERRIDES, "data.path=unused", *args.set])


def cmd_scale(args: argparse.Namespace) -> dict[str, Any]:
    """Run every corpus, print the table and the goal lines, write the JSON."""
    check_args(args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="charlm-scale-"))
    load_before = list(os.getloadavg())
    try:
        rows = scale_rows(args, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(scale_table(rows))
    for line in goal_lines(rows):
        print(line)
    payload = {
        "benchmark": "scale",
        "machine": machine(),
        "command": sys.argv,
        "settings": {
            "sizes": args.sizes,
            "steps": args.steps,
            "set": args.set,
            "train_command": train_command() + run_overrides(Path("CORPUS"), args.steps, Path("RUN"), Path("P"), []),
            "goals": GOALS,
            "load_average": {"before": load_before, "after": list(os.getloadavg())},
        },
        "rows": rows,
    }
    write_json(args.out, payload)
    return payload


def add_parser(sub: Any) -> None:
    """The `scale` subcommand's options, declared beside the code that reads them."""
    s = sub.add_parser("scale", help="corpus size: preparation time, start-up and peak RSS (10 MB .. 1 GiB)")
    s.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="corpus sizes: 200KB, 10MB, 1GiB ...")
    s.add_argument("--baseline", help="baseline text (e.g. Tiny Shakespeare's input.txt); default: none")
    s.add_argument("--workdir", help="where corpora, logs and runs go (kept); default: a temporary folder")
    s.add_argument("--keep-corpora", action="store_true", help="keep the generated corpora (reused next time)")
    s.add_argument("--steps", type=int, default=30, help="training steps per run (validated once, at the end)")
    s.add_argument("--timeout", type=float, default=3600, help="seconds one training run may take")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Hydra overrides for every run")
    s.add_argument("--out", default="outputs/benchmark/scale.json", help="JSON results")
