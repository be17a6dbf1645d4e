"""The ``android`` device: time a .tflite on a phone through adb and the android_demo benchmark mode.

Flow (one model): find ``adb`` → pick the phone (``adb devices``) → check the demo app is installed →
``adb push`` the model to ``/data/local/tmp/edgeretina/`` → ``adb shell am start`` the app's benchmark
activity with ``--es model … --ei runs N --ei warmup W --ei threads T --es delegate cpu|gpu --es run_id ID``
→ poll for the JSON result the app writes (``files/bench/<ID>.json`` in its external and internal files
dirs; also logged to logcat with tag ``EdgeRetinaBench``) → parse it into a :class:`Timing` plus the
phone's facts (model, SoC, Android version, delegate actually applied).

Scores come from the phone too (issue 17): ``predict(x)`` writes the preprocessed inputs as a float32
``.npy``, pushes it with the model and starts the activity with ``--es inputs …``; the app runs the model on
every input and returns each image's raw output tensor (and its own probabilities, decision and borderline
flag); the runner turns the raw outputs into probabilities exactly as the host runner does (dequantised
with the output tensor's scale/zero point, the metadata's activation), so AUROC and flips in the report are
the phone's. It also scores the same inputs with the same file on the host and reports the difference
(``facts["vs_host"]``: max |Δ raw output|, decisions that differ). ``EDGERETINA_ANDROID_SCORES=host``
(or ``scores="host"``) is the fallback: the phone only times and the report's scores are the host's,
labelled so in the row's note and ``facts["scores"]``. Every problem — no adb, no phone, an unauthorised or offline phone,
several phones and no serial, app not installed, a failed run on the phone, a timeout — is a one-line
:class:`~edgeretina.errors.DeviceError`.

Settings (keyword arguments, or environment variables for ``edgeretina bench --device android``):
``EDGERETINA_ADB`` (adb path; default ``adb`` on PATH), ``ANDROID_SERIAL`` (which phone),
``EDGERETINA_ANDROID_DELEGATE`` (``cpu`` = XNNPACK, ``gpu`` = GPU delegate; default cpu),
``EDGERETINA_ANDROID_TIMEOUT`` (seconds to wait for one model's result; default 600),
``EDGERETINA_ANDROID_REMOTE_DIR`` (where models are pushed; default ``/data/local/tmp/edgeretina``),
``EDGERETINA_ANDROID_SCORES`` (``phone``: scores from the phone's outputs, the default; ``host``: fallback),
``EDGERETINA_ANDROID_CHUNK`` (images per phone run when scoring; default 256).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeretina.env import parse_cpuinfo
from edgeretina.errors import DeviceError
from edgeretina.runtime import LiteRTModel, Timing
from edgeretina.runtime.decisions import outputs_logits, to_probabilities

PACKAGE = "org.edgeretina.demo"
ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
REMOTE_DIR = "/data/local/tmp/edgeretina"
RESULT_SCHEMA = "edgeretina.android-bench/1"
RESULT_DIR = "bench"  # under the app's files dirs
LOG_TAG = "EdgeRetinaBench"
DELEGATES = ("cpu", "gpu")
SCORES = ("phone", "host")  # where the report's scores come from
HOST_NOTE = "scores from the same file on the host (LiteRT; EDGERETINA_ANDROID_SCORES=host fallback); latency from the phone"
PHONE_NOTE = "scores and latency from the phone (its own outputs)"
DEFAULT_THREADS = 4
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_CHUNK = 256  # images per phone run when scoring (224² float32: ~150 MB pushed per run)

_STATE_HINTS = {
    "unauthorized": "accept the 'Allow USB debugging?' prompt on the phone (then run 'adb devices' again)",
    "offline": "reconnect the cable or run 'adb kill-server'",
    "no permissions": "add a udev rule for the phone (see https://developer.android.com/studio/run/device)",
    "recovery": "reboot the phone into Android",
    "sideload": "reboot the phone into Android",
    "bootloader": "reboot the phone into Android",
    "authorizing": "wait for the phone to finish authorising, then retry",
    "connecting": "wait for the phone to connect, then retry",
}


# ------------------------------------------------------------------------------------------ adb plumbing
def find_adb(adb: str | os.PathLike | None = None) -> str:
    """The adb executable: ``adb`` argument, else ``$EDGERETINA_ADB``, else ``adb`` on PATH."""
    want = str(adb) if adb else os.environ.get("EDGERETINA_ADB") or "adb"
    found = shutil.which(want)
    if found is None:
        if os.sep in want or (os.altsep and os.altsep in want):
            raise DeviceError(f"android: adb not found at {want} (set EDGERETINA_ADB to the adb executable)")
        raise DeviceError("android: adb not found on PATH (install Android platform-tools, or set "
                          "EDGERETINA_ADB to the adb executable)")
    return found


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _adb(adb: str, args: Sequence[str], serial: str | None = None, timeout: float = 60.0,
         check: bool = True, binary: bool = False):
    cmd = [adb] + (["-s", serial] if serial else []) + list(args)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, text=not binary)
    except FileNotFoundError:
        raise DeviceError(f"android: cannot run {adb} (not found)") from None
    except PermissionError:
        raise DeviceError(f"android: cannot run {adb} (not executable)") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"android: 'adb {' '.join(args[:2])}' timed out after {timeout:.0f} s") from None
    if check and p.returncode != 0:
        err = p.stderr.decode("utf-8", "replace") if binary else p.stderr
        out = p.stdout.decode("utf-8", "replace") if binary else p.stdout
        msg = _first_line(err) or _first_line(out) or f"exit status {p.returncode}"
        raise DeviceError(f"android: 'adb {' '.join(args[:2])}' failed ({msg})")
    return p


@dataclass(frozen=True)
class AdbDevice:
    serial: str
    state: str  # device | unauthorized | offline | no permissions | recovery | ...
    details: dict[str, str] = field(default_factory=dict)  # -l extras: product, model, device, transport_id


def parse_devices(text: str) -> list[AdbDevice]:
    """Parse ``adb devices`` / ``adb devices -l`` output (daemon start-up chatter is ignored)."""
    out: list[AdbDevice] = []
    for line in (text or "").splitlines():
        s = line.strip()
        if not s or s.startswith("*") or s.startswith("List of devices") or s.startswith("adb server"):
            continue
        if "\t" in s:
            serial, rest = s.split("\t", 1)
        else:
            parts = s.split(None, 1)
            if len(parts) < 2:
                continue
            serial, rest = parts
        rest = rest.strip()
        state = rest
        details: dict[str, str] = {}
        if rest.startswith("no permissions"):
            state = "no permissions"
        else:
            tokens = rest.split()
            state = tokens[0] if tokens else ""
            for t in tokens[1:]:
                if ":" in t:
                    k, v = t.split(":", 1)
                    details[k] = v
        out.append(AdbDevice(serial.strip(), state, details))
    return out


def pick_device(devices: Sequence[AdbDevice], serial: str | None = None) -> AdbDevice:
    """The phone to use: ``serial`` (or ``$ANDROID_SERIAL``) if given, else the only one attached."""
    serial = serial or os.environ.get("ANDROID_SERIAL") or None
    if serial:
        match = [d for d in devices if d.serial == serial]
        if not match:
            listed = ", ".join(d.serial for d in devices) or "none"
            raise DeviceError(f"android: no device '{serial}' attached (adb devices lists: {listed})")
        d = match[0]
    else:
        if not devices:
            raise DeviceError("android: no device attached (adb devices lists none; connect a phone with USB "
                              "debugging enabled)")
        ready = [d for d in devices if d.state == "device"]
        if len(ready) > 1:
            raise DeviceError(f"android: {len(ready)} devices attached ({', '.join(d.serial for d in ready)}); "
                              "choose one with ANDROID_SERIAL=<serial>")
        if not ready:
            d = devices[0]
        else:
            d = ready[0]
    if d.state != "device":
        hint = _STATE_HINTS.get(d.state, "check the phone and its USB debugging settings")
        raise DeviceError(f"android: device {d.serial} is {d.state}: {hint}")
    return d


def check(adb: str | None = None, serial: str | None = None) -> None:
    """Raise :class:`DeviceError` unless adb runs and exactly one usable phone is chosen."""
    exe = find_adb(adb)
    pick_device(parse_devices(_adb(exe, ["devices", "-l"], timeout=30).stdout), serial)


# ----------------------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class AndroidResult:
    """One benchmark-mode run as the app reported it (schema ``edgeretina.android-bench/1``)."""

    timing: Timing
    device: dict[str, Any]  # manufacturer, model, device, soc, android_version, sdk_int, abi
    delegate: str  # requested: cpu | gpu
    delegate_applied: str  # what ran: xnnpack | gpu | cpu (no XNNPACK)
    threads: int
    runs: int
    warmup: int
    model: str
    load_ms: float | None
    runtime: str
    raw: dict[str, Any]

    @property
    def outputs(self) -> dict[str, Any] | None:
        """The per-image outputs block (``raw``, ``probabilities``, ``decisions``, ``borderline``, ``dtype``,
        ``n``) when the run was given inputs; None otherwise."""
        o = self.raw.get("outputs")
        return o if isinstance(o, dict) else None

    def raw_outputs(self) -> np.ndarray:
        """The phone's raw output tensors (N, outputs), dequantised like the host runner does:
        ``(q − zero_point) · scale`` for an integer output tensor, float64."""
        o = self.outputs
        if o is None or not isinstance(o.get("raw"), list):
            raise DeviceError("android: the phone returned no per-image outputs (is the app up to date? it must "
                              "accept '--es inputs'); set EDGERETINA_ANDROID_SCORES=host to take scores from the host")
        try:
            a = np.asarray(o["raw"], dtype=np.float64)
        except (TypeError, ValueError):
            raise DeviceError("android: the phone's per-image outputs are not a numeric matrix") from None
        a = a.reshape(len(a), -1)
        if str(o.get("dtype", "float32")) in ("int8", "uint8", "int16"):
            t = self.raw.get("output") or {}
            scale, zp = float(t.get("scale") or 0.0), int(t.get("zero_point") or 0)
            if not scale:
                raise DeviceError("android: integer outputs without a scale in the result's 'output' tensor")
            a = (a - zp) * scale
        return a

    @property
    def label(self) -> str:
        """e.g. ``Google Pixel 7 · Google Tensor G2 · Android 14 · xnnpack×4``."""
        d = self.device
        name = " ".join(x for x in (d.get("manufacturer"), d.get("model")) if x)
        threads = f"×{self.threads}" if self.delegate_applied != "gpu" else ""
        return " · ".join(str(x) for x in (name, d.get("soc"), f"Android {d.get('android_version')}",
                                          f"{self.delegate_applied}{threads}") if x)

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.timing.p50, "p90_ms": self.timing.p90, "mean_ms": self.timing.mean,
                "n": self.timing.n, "device": dict(self.device), "delegate": self.delegate,
                "delegate_applied": self.delegate_applied, "threads": self.threads, "runs": self.runs,
                "warmup": self.warmup, "model": self.model, "load_ms": self.load_ms, "runtime": self.runtime}


def parse_result(text: str | bytes, source: str = "benchmark result") -> AndroidResult:
    """Parse the JSON the app writes. A run that failed on the phone → DeviceError with its message."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise DeviceError(f"android: {source} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict) or d.get("schema") != RESULT_SCHEMA:
        raise DeviceError(f"android: {source} is not an edgeretina benchmark result "
                          f"(schema {RESULT_SCHEMA!r} missing; is the app up to date?)")
    if d.get("status") != "ok":
        msg = str(d.get("error") or "unknown error").strip().splitlines()
        raise DeviceError(f"android: the benchmark failed on the phone: {msg[0] if msg else 'unknown error'}")
    samples = d.get("samples_ms")
    try:
        if samples:
            a = np.asarray(samples, dtype=np.float64)
            timing = Timing.from_samples(a)
            for key, v in (("p50_ms", timing.p50), ("p90_ms", timing.p90), ("mean_ms", timing.mean)):
                if d.get(key) is not None and abs(float(d[key]) - v) > 1e-6 * max(1.0, abs(v)):
                    raise DeviceError(f"android: {source}: {key} {d[key]} disagrees with its samples ({v:.6g})")
        else:
            timing = Timing(float(d["p50_ms"]), float(d["p90_ms"]), float(d["mean_ms"]), int(d["n"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DeviceError(f"android: {source} lacks latency numbers ({e})") from None
    dev = d.get("device") if isinstance(d.get("device"), dict) else {}
    load_ms = d.get("load_ms")
    return AndroidResult(
        timing=timing, device=dev, delegate=str(d.get("delegate", "")),
        delegate_applied=str(d.get("delegate_applied", d.get("delegate", ""))),
        threads=int(d.get("threads") or 0), runs=int(d.get("runs") or timing.n), warmup=int(d.get("warmup") or 0),
        model=str(d.get("model", "")), load_ms=float(load_ms) if load_ms is not None else None,
        runtime=str(d.get("runtime", "")), raw=d,
    )


# ----------------------------------------------------------------------------------------- the runner
class AndroidRunner:
    """A :class:`~edgeretina.benchmarks.runners.base.Runner` whose ``time`` runs on a phone.

    ``time(x, runs, warmup)`` performs ``runs × len(x)`` timed batch-1 inferences on the phone (the same
    count as the host runners) after ``warmup`` untimed ones; the app feeds a fixed input tensor, since a
    CNN's latency does not depend on pixel values. After ``time``, ``result`` holds the full
    :class:`AndroidResult` and ``facts`` the phone's facts.
    """

    device = "android"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, delegate: str | None = None,
                 serial: str | None = None, adb: str | None = None, timeout_s: float | None = None,
                 meta: dict | None = None, scores: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise DeviceError(f"android: {self.path}: no such model file")
        if self.path.suffix != ".tflite":
            raise DeviceError(f"android: {self.path}: the phone runs .tflite models only")
        self.threads = int(threads) if threads else DEFAULT_THREADS
        self.delegate = (delegate or os.environ.get("EDGERETINA_ANDROID_DELEGATE") or "cpu").lower()
        if self.delegate not in DELEGATES:
            raise DeviceError(f"android: unknown delegate '{self.delegate}' (choose from: {', '.join(DELEGATES)})")
        self.scores = (scores or os.environ.get("EDGERETINA_ANDROID_SCORES") or "phone").lower()
        if self.scores not in SCORES:
            raise DeviceError(f"android: unknown scores source '{self.scores}' (choose from: {', '.join(SCORES)})")
        self.meta = dict(meta or {})
        try:
            self.chunk = max(1, int(os.environ.get("EDGERETINA_ANDROID_CHUNK") or DEFAULT_CHUNK))
        except ValueError:
            raise DeviceError("android: EDGERETINA_ANDROID_CHUNK must be a whole number of images") from None
        self.scored: AndroidResult | None = None  # the run that returned per-image outputs
        self.vs_host: dict[str, Any] | None = None
        env_timeout = os.environ.get("EDGERETINA_ANDROID_TIMEOUT")
        self.timeout_s = float(timeout_s or env_timeout or DEFAULT_TIMEOUT_S)
        self.package = PACKAGE
        self.poll_s = min(1.0, self.timeout_s / 5)  # result polling: a fifth of the timeout, at most 1 s
        self.adb = find_adb(adb)
        self.serial = pick_device(parse_devices(_adb(self.adb, ["devices", "-l"], timeout=30).stdout), serial).serial
        self.result: AndroidResult | None = None

    # the Runner protocol -----------------------------------------------------------------------------
    @property
    def supports_predict(self) -> bool:
        """True: the report's scores are the phone's (``predict``); False (``scores='host'``): host fallback."""
        return self.scores == "phone"

    @property
    def score_note(self) -> str:
        return PHONE_NOTE if self.supports_predict else HOST_NOTE

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (N, outputs) computed from the phone's own output tensors for the inputs ``x``
        (float32 (N, H, W, 3), the model's preprocessing already applied, as for every runner)."""
        if not self.supports_predict:
            raise DeviceError("android: EDGERETINA_ANDROID_SCORES=host: the phone only times; scores come from the "
                              "same .tflite on the host (device 'cpu')")

        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        parts = []
        for i in range(0, len(x), self.chunk):  # one run per chunk: bounded pushes and waits
            part = x[i:i + self.chunk]
            self.scored = self.benchmark(runs=1, warmup=0, inputs=part)
            raw = self.scored.raw_outputs()
            if len(raw) != len(part):
                raise DeviceError(f"android: the phone returned {len(raw)} outputs for {len(part)} inputs")
            parts.append(raw)
        raw = np.concatenate(parts) if parts else np.zeros((0, 0))
        self.vs_host = self._compare_with_host(x, raw)
        out = self.meta.get("output") if isinstance(self.meta.get("output"), dict) else {}
        activation = out.get("activation") or ("sigmoid" if self.meta.get("kind") == "multilabel" else "softmax")
        return to_probabilities(raw, outputs_logits(out), activation)

    def _compare_with_host(self, x: np.ndarray, raw: np.ndarray) -> dict[str, Any] | None:
        """The same inputs through the same file on this machine's LiteRT: how far the phone's kernels are from
        the host's (max |Δ| of the dequantised raw outputs, images whose top output differs)."""
        try:
            host = np.asarray(LiteRTModel(self.path, threads=None).raw(x), dtype=np.float64).reshape(len(x), -1)
        except Exception as e:  # noqa: BLE001 - a host that cannot run the file: the phone's numbers still stand
            return {"error": f"host LiteRT could not run the file ({type(e).__name__})"}
        d = np.abs(host - raw)
        return {"n": int(len(x)), "max_abs_diff": float(d.max()) if d.size else 0.0,
                "identical": int(np.sum(np.all(d == 0, axis=1))),
                "argmax_differs": int(np.sum(np.argmax(host, 1) != np.argmax(raw, 1)))}

    def time(self, x: np.ndarray | None = None, runs: int = 10, warmup: int = 3) -> Timing:
        n_images = 1 if x is None else max(1, len(x))
        self.result = self.benchmark(runs=max(1, int(runs)) * n_images, warmup=max(0, int(warmup)))
        return self.result.timing

    @property
    def facts(self) -> dict[str, Any]:
        """The phone's facts from the last run (empty before ``time``)."""
        if self.result is None:
            return {}
        out = {**self.result.device, **self.cpu_facts(), "delegate": self.result.delegate,
               "delegate_applied": self.result.delegate_applied, "threads": self.result.threads,
               "runtime": self.result.runtime, "label": self.result.label,
               "scores": "phone" if self.scored is not None else "host (fallback: EDGERETINA_ANDROID_SCORES=host)"}
        if self.vs_host is not None:
            out["vs_host"] = dict(self.vs_host)
        return out

    def cpu_facts(self) -> dict[str, Any]:
        """The phone's cores and ISA flags (``neon``, ``dotprod``, ``i8mm``, ``sve``, ``sme``, …) from its
        /proc/cpuinfo over adb (issue 17); empty when the phone does not show it."""
        if getattr(self, "_cpu_facts", None) is None:
            r = self._sh(["shell", "cat", "/proc/cpuinfo"], timeout=30, check=False)
            text = r.stdout or "" if r.returncode == 0 else ""
            cores = sum(1 for ln in text.splitlines() if ln.split(":")[0].strip() == "processor")
            isa = parse_cpuinfo(text)["isa"]
            self._cpu_facts = {**({"cores": cores} if cores else {}), **({"isa": isa} if isa else {})}
        return self._cpu_facts

    # steps -------------------------------------------------------------------------------------------
    def _sh(self, args: Sequence[str], timeout: float = 60.0, check: bool = True):
        return _adb(self.adb, args, serial=self.serial, timeout=timeout, check=check)

    def ensure_app(self) -> None:
        p = self._sh(["shell", "pm", "path", self.package], check=False)
        if "package:" not in (p.stdout or ""):
            raise DeviceError(f"android: the edgeretina demo app ({self.package}) is not installed on "
                              f"{self.serial}; build android_demo and 'adb install' it (android_demo/README.md)")

    def push_model(self) -> str:
        h = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return self.push(self.path, f"{h}-{self.path.name}")

    def push(self, local: Path, name: str) -> str:
        remote_dir = os.environ.get("EDGERETINA_ANDROID_REMOTE_DIR") or REMOTE_DIR
        remote = f"{remote_dir.rstrip('/')}/{name}"
        self._sh(["shell", "mkdir", "-p", remote_dir])
        self._sh(["push", str(local), remote], timeout=900)
        return remote

    def push_inputs(self, x: np.ndarray) -> str:
        """``x`` as a float32 .npy on the phone (what the app's ``--es inputs`` reads)."""
        with tempfile.TemporaryDirectory(prefix="edgeretina-android-") as d:
            local = Path(d) / "inputs.npy"
            np.save(local, np.ascontiguousarray(x, dtype="<f4"))
            h = hashlib.sha256(local.read_bytes()).hexdigest()[:12]
            return self.push(local, f"{h}-inputs.npy")

    def start(self, remote: str, runs: int, warmup: int, run_id: str, inputs: str | None = None) -> None:
        args = ["shell", "am", "start", "-W", "-S", "-n", f"{self.package}/.BenchmarkActivity",
                "--es", "model", remote, "--ei", "runs", str(runs), "--ei", "warmup", str(warmup),
                "--ei", "threads", str(self.threads), "--es", "delegate", self.delegate, "--es", "run_id", run_id]
        if inputs:
            args += ["--es", "inputs", inputs]
        p = self._sh(args, timeout=120)
        text = (p.stdout or "") + (p.stderr or "")
        for line in text.splitlines():
            if line.strip().startswith("Error") or "Exception" in line:
                raise DeviceError(f"android: cannot start the benchmark activity ({line.strip()})")

    def result_paths(self, run_id: str) -> list[list[str]]:
        name = f"{RESULT_DIR}/{run_id}.json"
        return [
            ["exec-out", "cat", f"/sdcard/Android/data/{self.package}/files/{name}"],
            ["exec-out", "run-as", self.package, "cat", f"files/{name}"],
        ]

    def fetch(self, run_id: str) -> str | None:
        for args in self.result_paths(run_id):
            p = _adb(self.adb, args, serial=self.serial, timeout=60, check=False)
            out = (p.stdout or "").strip()
            if p.returncode == 0 and out.startswith("{") and out.endswith("}"):
                return out
        return None

    def benchmark(self, runs: int, warmup: int, inputs: np.ndarray | None = None) -> AndroidResult:
        """Push, start, wait and parse one benchmark-mode run (``runs`` timed inferences; with ``inputs``,
        also the model's outputs on each of them)."""
        self.ensure_app()
        remote = self.push_model()
        pushed = [remote]
        try:
            remote_inputs = None
            if inputs is not None:
                remote_inputs = self.push_inputs(inputs)
                pushed.append(remote_inputs)
            run_id = f"er-{uuid.uuid4().hex[:12]}"
            self.start(remote, runs, warmup, run_id, inputs=remote_inputs)
            deadline = time.monotonic() + self.timeout_s
            while True:
                text = self.fetch(run_id)
                if text is not None:
                    return parse_result(text, source=f"{self.serial}:{RESULT_DIR}/{run_id}.json")
                if time.monotonic() > deadline:
                    raise DeviceError(f"android: no benchmark result from {self.serial} after "
                                      f"{self.timeout_s:.0f} s (see 'adb logcat -s {LOG_TAG}')")
                time.sleep(self.poll_s)
        finally:
            for r in pushed:
                self._sh(["shell", "rm", "-f", shlex.quote(r)], check=False)


def load(path: str | os.PathLike, *, meta: dict | None = None, threads: int | None = None,
         delegate: str | None = None, serial: str | None = None, adb: str | None = None,
         timeout_s: float | None = None, scores: str | None = None) -> AndroidRunner:
    """The device registry's entry point (``benchmarks/devices.py``): an :class:`AndroidRunner`; ``meta`` (the
    model's edgeretina metadata) says how its outputs become probabilities."""
    return AndroidRunner(path, threads=threads, delegate=delegate, serial=serial, adb=adb, timeout_s=timeout_s,
                         meta=meta, scores=scores)
